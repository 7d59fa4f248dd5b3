#!/bin/sh
# Entrypoint of the lab's PostgreSQL 15 image (a small POSIX-sh take on the
# official image's docker-entrypoint.sh).
set -eu

# file_env VAR: VAR may come from VAR or from the file named by VAR_FILE.
file_env() {
	var="$1"; default="${2:-}"
	eval "val=\${$var:-}"; eval "file=\${${var}_FILE:-}"
	if [ -n "$val" ] && [ -n "$file" ]; then
		echo "error: both $var and ${var}_FILE are set" >&2; exit 1
	fi
	if [ -n "$file" ]; then val="$(cat "$file")"; fi
	[ -n "$val" ] || val="$default"
	export "$var=$val"
	unset "${var}_FILE" 2>/dev/null || true
}

# Anything that is not the server runs as given (e.g. the backup daemon's sh -c).
if [ "$#" -gt 0 ] && [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$#" -eq 0 ] || [ "$1" != "postgres" ]; then exec "$@"; fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
	# As root: own the data dir, then drop to postgres (uid 999) and start again.
	mkdir -p "$PGDATA" /var/run/postgresql
	chmod 0700 "$PGDATA" || true
	# PGDATA in a subdirectory of a volume (e.g. .../data/pgdata): the volume's
	# root may be root-owned 0750 (Kubernetes' hostpath provisioner makes it so),
	# and postgres must be able to reach PGDATA through it.
	parent="$(dirname "$PGDATA")"
	if [ "$parent" != / ] && ! setpriv --reuid=postgres --regid=postgres --init-groups test -x "$parent"; then
		chown postgres:postgres "$parent" || true
	fi
	chown -R postgres:postgres "$PGDATA" /var/run/postgresql 2>/dev/null || chown postgres:postgres "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups /usr/local/bin/docker-entrypoint.sh "$@"
fi

file_env POSTGRES_USER postgres
file_env POSTGRES_PASSWORD
file_env POSTGRES_DB "$POSTGRES_USER"
file_env POSTGRES_INITDB_ARGS
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

mkdir -p "$PGDATA"
chmod 0700 "$PGDATA" 2>/dev/null || true

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" >&2
		echo "       (set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
		exit 1
	fi
	pwfile="$(mktemp)"
	printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
	# shellcheck disable=SC2086
	initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
		--auth-host="$POSTGRES_HOST_AUTH_METHOD" $POSTGRES_INITDB_ARGS
	rm -f "$pwfile"
	{
		echo
		echo "host all all all $POSTGRES_HOST_AUTH_METHOD"
	} >> "$PGDATA/pg_hba.conf"
	echo "listen_addresses = '*'" >> "$PGDATA/postgresql.auto.conf"

	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
	psql_cmd() { psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname "$1"; }
	if [ "$POSTGRES_DB" != postgres ]; then
		exists="$(echo "SELECT 1 FROM pg_database WHERE datname = :'db'" |
			psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
				-v db="$POSTGRES_DB" -tA)"
		if [ -z "$exists" ]; then
			echo 'CREATE DATABASE :"db";' |
				psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --dbname postgres \
					-v db="$POSTGRES_DB"
		fi
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh) echo "running $f"; . "$f" ;;
			*.sql) echo "running $f"; psql_cmd "$POSTGRES_DB" < "$f" ;;
			*.sql.gz) echo "running $f"; gunzip -c "$f" | psql_cmd "$POSTGRES_DB" ;;
			*) ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop
	echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
