#!/bin/sh
# The backup daemon of the postgres-backup Deployment, mounted at /scripts/backup.sh.
#
#   sh /scripts/backup.sh loop     dump now, then every BACKUP_INTERVAL_SECONDS (default 1800)
#   sh /scripts/backup.sh once     one dump, then retention
#   sh /scripts/backup.sh prune    retention only
#   sh /scripts/backup.sh health   exit 0 while the loop's heartbeat is fresh (the probes)
#
# A dump goes to BACKUP_DIR/continuous-YYYYMMDD-HHMMSS.sql.part and is renamed to its final
# name only after pg_dump succeeded and wrote its end marker; its sha256sum-format sidecar
# (X.sha256) is in place before the rename. Retention keeps the KEEP (default 10) newest of
# the daemon's OWN dumps (PREFIX-YYYYMMDD-HHMMSS.sql, newest by the time in the name, each
# with its sidecar): a backup uploaded with `inv backup.to-daemon` (any other name) is never
# pruned here, only on purpose with `inv backup.prune`. *.part files are never touched. A
# failed run deletes nothing but its own .part. One log line per run.
#
# libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE from the environment.
# POSIX sh only (dash, busybox): the image decides which shell runs this.

set -u

BACKUP_DIR=${BACKUP_DIR:-/backups}
KEEP=${KEEP:-10}
BACKUP_INTERVAL_SECONDS=${BACKUP_INTERVAL_SECONDS:-1800}
PREFIX=${BACKUP_PREFIX:-continuous}
HEARTBEAT_FILE=${HEARTBEAT_FILE:-${TMPDIR:-/tmp}/postgres-backup.heartbeat}
# The heartbeat may be as old as a whole interval plus a long dump.
HEALTH_MAX_AGE_SECONDS=${HEALTH_MAX_AGE_SECONDS:-}

part=""
sidecar_part=""
worker=""

log() {
    printf '%s backup %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
}

fail_config() {
    log "error $*"
    exit 2
}

whole_number() {
    case $2 in
        '' | *[!0-9]*) fail_config "$1=$2 is not a whole number" ;;
    esac
}

cleanup() {
    if [ -n "$worker" ]; then
        kill "$worker" 2>/dev/null
        worker=""
    fi
    if [ -n "$part" ]; then
        rm -f -- "$part"
    fi
    if [ -n "$sidecar_part" ]; then
        rm -f -- "$sidecar_part"
    fi
    part=""
    sidecar_part=""
}

# Deletes all but the KEEP newest of this daemon's own dumps; prints how many it kept and
# deleted. Newest by name: the name holds the dump's time (UTC), an mtime can be anything.
prune() {
    kept=0
    deleted=0
    listing=$(cd "$BACKUP_DIR" && ls -1 -- "$PREFIX"-[0-9]*-[0-9]*.sql 2>/dev/null | sort -r)
    saved_ifs=$IFS
    IFS='
'
    set -f
    for name in $listing; do
        [ -f "$BACKUP_DIR/$name" ] || continue
        if [ "$kept" -lt "$KEEP" ]; then
            kept=$((kept + 1))
        elif rm -f -- "$BACKUP_DIR/$name" "$BACKUP_DIR/$name.sha256"; then
            deleted=$((deleted + 1))
        fi
    done
    set +f
    IFS=$saved_ifs
    echo "kept=$kept deleted=$deleted"
}

reason_in() {
    # pg_dump's first error line (else its last line), as one quoted-safe log field.
    { grep -m 1 'error' "$1" || tail -n 1 "$1"; } 2>/dev/null | tr -d '"\r' | tr '\t' ' ' \
        | cut -c 1-300
}

run_once() {
    started=$(date +%s)
    name="$PREFIX-$(date -u +%Y%m%d-%H%M%S).sql"
    target="$BACKUP_DIR/$name"
    if [ -e "$target" ]; then
        log "FAILED file=$name reason=\"a backup of that name exists already\" nothing deleted"
        return 1
    fi
    errors="${TMPDIR:-/tmp}/postgres-backup.$$.err"
    part="$target.part"
    sidecar_part="$target.sha256.part"

    # In the background, so that a TERM during a long dump is handled at once.
    # --clean --if-exists: the dump drops what it recreates, so `psql -1 -f` restores it
    # over the live database (as `inv backup.restore` does with its own plain dumps).
    pg_dump --no-password --format=plain --clean --if-exists --no-owner --file="$part" \
        2>"$errors" &
    worker=$!
    wait "$worker"
    status=$?
    worker=""
    reason=""
    if [ "$status" -ne 0 ]; then
        reason="pg_dump exited $status: $(reason_in "$errors")"
    elif ! tail -n 5 "$part" | grep -q 'PostgreSQL database dump complete'; then
        reason="the dump has no end marker"
    else
        hash=$(sha256sum "$part" | cut -d ' ' -f 1)
        if [ "${#hash}" -ne 64 ]; then
            reason="sha256sum failed"
        elif ! printf '%s  %s\n' "$hash" "$name" >"$sidecar_part" \
            || ! mv -f -- "$sidecar_part" "$target.sha256"; then
            reason="cannot write $name.sha256"
        elif ! mv -f -- "$part" "$target"; then
            rm -f -- "$target.sha256"
            reason="cannot rename the dump into place"
        fi
    fi
    rm -f -- "$errors"
    if [ -n "$reason" ]; then
        cleanup
        log "FAILED file=$name reason=\"$reason\" seconds=$(($(date +%s) - started)) nothing deleted"
        return 1
    fi
    part=""
    sidecar_part=""
    bytes=$(wc -c <"$target" | tr -d ' ')
    retention=$(prune)
    log "ok file=$name bytes=$bytes sha256=$hash $retention seconds=$(($(date +%s) - started))"
    return 0
}

health() {
    max_age=${HEALTH_MAX_AGE_SECONDS:-$((2 * BACKUP_INTERVAL_SECONDS + 600))}
    whole_number HEALTH_MAX_AGE_SECONDS "$max_age"
    if [ ! -f "$HEARTBEAT_FILE" ]; then
        echo "no heartbeat yet ($HEARTBEAT_FILE)"
        return 1
    fi
    age=$(($(date +%s) - $(date -r "$HEARTBEAT_FILE" +%s)))
    if [ "$age" -gt "$max_age" ]; then
        echo "heartbeat is ${age}s old (limit ${max_age}s)"
        return 1
    fi
    return 0
}

loop() {
    # A .part of this daemon's own names can only be left over from a killed container.
    rm -f -- "$BACKUP_DIR/$PREFIX"-*.part
    log "started interval=${BACKUP_INTERVAL_SECONDS}s keep=$KEEP dir=$BACKUP_DIR"
    while :; do
        : >"$HEARTBEAT_FILE"
        run_once
        : >"$HEARTBEAT_FILE"
        sleep "$BACKUP_INTERVAL_SECONDS" &
        worker=$!
        wait "$worker"
        worker=""
    done
}

whole_number KEEP "$KEEP"
whole_number BACKUP_INTERVAL_SECONDS "$BACKUP_INTERVAL_SECONDS"
[ "$KEEP" -ge 1 ] || fail_config "KEEP=$KEEP must be at least 1"
[ "$BACKUP_INTERVAL_SECONDS" -ge 1 ] || fail_config "BACKUP_INTERVAL_SECONDS must be at least 1"

trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 130' INT

mode=${1:-}
case $mode in
    loop) loop ;;
    once) run_once ;;
    prune)
        [ -d "$BACKUP_DIR" ] || fail_config "BACKUP_DIR $BACKUP_DIR is not a folder"
        log "prune $(prune)"
        ;;
    health) health ;;
    *)
        echo "usage: sh backup.sh loop|once|prune|health" >&2
        exit 2
        ;;
esac
