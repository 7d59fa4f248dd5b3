"""The PostgreSQL command lines: pg_dump, pg_restore and psql as the pod's own user."""

from __future__ import annotations

from collections.abc import Sequence

from ops.pgformat import DumpFormat

# As a new PostgreSQL 15 database has it (owner pg_database_owner, usable by everyone).
RECREATE_PUBLIC = (
    b"DROP SCHEMA IF EXISTS public CASCADE;\n"
    b"CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n"
    b"GRANT USAGE ON SCHEMA public TO PUBLIC;\n"
    b"COMMENT ON SCHEMA public IS 'standard public schema';\n"
)
# $0 is the tool; the pod's shell expands the credentials, so no value is ever sent.
_PG = (
    'PGPASSWORD="${POSTGRES_PASSWORD:-$PGPASSWORD}" '
    'exec "$0" -U "${POSTGRES_USER:-${PGUSER:-postgres}}" "$@"'
)
_ROW_COUNTS = (
    "SELECT format('%I.%I', table_schema, table_name), "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "table_schema, table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


# --- commands --------------------------------------------------------------------------


def pg_command(tool: str, *args: str) -> list[str]:
    """``tool args`` run as the pod's PostgreSQL user, credentials expanded in the pod."""
    return ["sh", "-c", _PG, tool, *args]


def dump_command(database: str, fmt: DumpFormat, compression: int) -> list[str]:
    args = ["-d", database, "--no-password"]
    if fmt == "custom":
        args += ["--format=custom", f"--compress={compression}"]
    else:
        # Plain dumps carry their own DROP ... IF EXISTS so they restore over a live database.
        args += ["--format=plain", "--clean", "--if-exists", "--no-owner"]
    return pg_command("pg_dump", *args)


def restore_command(database: str, fmt: DumpFormat) -> list[str]:
    if fmt == "custom":
        return pg_command(
            "pg_restore",
            "-d",
            database,
            "--single-transaction",
            "--exit-on-error",
            "--clean",
            "--if-exists",
            "--no-owner",
        )
    # The transaction is ours (BEGIN ... COMMIT around the stream, see restore_backup), so
    # a stream cut short never reaches COMMIT: psql's --single-transaction would commit
    # whatever arrived before the cut at EOF.
    return pg_command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database)


def full_read_command() -> list[str]:
    """pg_restore reads (and decompresses) every block; ``--list`` alone passes truncations."""
    return ["pg_restore", "-f", "/dev/null"]


def program_name(argv: Sequence[str]) -> str:
    """The name of a backup command for messages: the PostgreSQL tool or script it runs,
    else its ``argv[0]`` (the runners' ``describe`` hook)."""
    for word in argv:
        if word.startswith(("pg_", "psql", "sha256sum")):
            return word
    for word in argv:
        for candidate in ("pg_dump", "pg_restore", "psql", "backup.sh", "sha256sum"):
            if candidate in word:
                return candidate
    return argv[0] if argv else "command"
