"""The PostgreSQL command lines: pg_dump, pg_restore and psql as the pod's own user."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from ops.pgformat import DumpFormat

# As a new PostgreSQL 15 database has it (owner pg_database_owner, usable by everyone).
RECREATE_PUBLIC = (
    b"DROP SCHEMA IF EXISTS public CASCADE;\n"
    b"CREATE SCHEMA public AUTHORIZATION pg_database_owner;\n"
    b"GRANT USAGE ON SCHEMA public TO PUBLIC;\n"
    b"COMMENT ON SCHEMA public IS 'standard public schema';\n"
)
# The restore rebuilds every index and primary key at its end, each a sort of all its
# table's rows: with PostgreSQL's default maintenance_work_mem (64 MB) a table of millions
# of rows sorts on disk. This transaction alone (set_config's is_local) gets 256 MB, never
# less than the server's own setting: measured in the lab's pod on a 459 MB database, the
# restore took 5.0-5.1 s instead of 5.5-6.3 s. The bound is per index build (parallel
# workers share it), well inside the 2Gi the project's postgres container may use.
RESTORE_MEMORY = (
    b"DO $memory$\n"
    b"BEGIN\n"
    b"  IF pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem'))\n"
    b"     < 256 * 1024 * 1024 THEN\n"
    b"    PERFORM pg_catalog.set_config('maintenance_work_mem', '256MB', true);\n"
    b"  END IF;\n"
    b"END\n"
    b"$memory$;\n"
)
# Run first, inside the restore's own transaction: drop every schema the database has (and
# its large objects), so that afterwards it holds exactly what the backup holds. Objects
# made after the dump are gone (the safety backup keeps them); on any error the whole
# transaction rolls back and nothing was dropped. (RESTORE_MEMORY comes with it.)
WIPE_DATABASE = (
    b"SET LOCAL client_min_messages = warning;\n" + RESTORE_MEMORY + b"DO $wipe$\n"
    b"DECLARE s name;\n"
    b"BEGIN\n"
    b"  FOR s IN SELECT nspname FROM pg_catalog.pg_namespace\n"
    b"           WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')\n"
    b"             AND nspname NOT LIKE 'pg\\_temp\\_%'\n"
    b"             AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'\n"
    b"  LOOP\n"
    b"    EXECUTE format('DROP SCHEMA %I CASCADE', s);\n"
    b"  END LOOP;\n"
    b"  PERFORM pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata;\n"
    b"END\n"
    b"$wipe$;\n" + RECREATE_PUBLIC
)
# $0 is the tool; the pod's shell expands the credentials, so no value is ever sent.
_PG = (
    'PGPASSWORD="${POSTGRES_PASSWORD:-$PGPASSWORD}" '
    'exec "$0" -U "${POSTGRES_USER:-${PGUSER:-postgres}}" "$@"'
)
# pg_dump writes its output through stdio, which flushes 4 KiB at a time into a pipe; the
# container runtime, the kubelet and the API server each frame every read of that pipe, so a
# 4 KiB write costs as much as a large one: measured through the exec API, 576 MB took 21 s
# that way and 9-12 s when stdbuf(1) gives pg_dump a 256 KiB buffer (kubectl alike:
# bench/backup_bench.py). stdbuf works by LD_PRELOAD; an image without it (or without its
# library: hence the `true` probe) gets plain pg_dump, the same bytes either way.
_PG_LARGE_WRITES = (
    'export PGPASSWORD="${POSTGRES_PASSWORD:-$PGPASSWORD}"; '
    'u="${POSTGRES_USER:-${PGUSER:-postgres}}"; '
    'stdbuf -o256K true 2>/dev/null && exec stdbuf -o256K "$0" -U "$u" "$@"; '
    'exec "$0" -U "$u" "$@"'
)
_ROW_COUNTS_SQL = (
    "SELECT format('%I.%I', table_schema, table_name), "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "table_schema, table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)

# The restore's report, printed inside its own transaction just before COMMIT: the rows each
# table received in it (what count(*) would say of a table the restore created, without
# reading them all again: a scan of a 1 GB database took seconds after every restore). A
# partitioned table counts its partitions' rows, as count(*) on it does (and each partition
# its own, as row_counts_command lists them too). With track_counts
# off the statistics are empty and nothing is printed (the caller counts then).
ROWS_MARKER = "manifest-rows"
ROWS_RECEIVED = (
    "\\pset format unaligned\n\\pset tuples_only on\n"
    f"SELECT '{ROWS_MARKER}' || E'\\t' || pg_catalog.format('%I.%I', n.nspname, c.relname)"
    " || E'\\t' || COALESCE((SELECT pg_catalog.sum(pg_catalog.pg_stat_get_xact_tuples_inserted("
    "t.relid)) FROM pg_catalog.pg_partition_tree(c.oid) t),"  # no rows: not partitioned
    " pg_catalog.pg_stat_get_xact_tuples_inserted(c.oid))"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p')"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"
    " AND pg_catalog.current_setting('track_counts')::bool ORDER BY 1;\n"
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
    return ["sh", "-c", _PG_LARGE_WRITES, "pg_dump", *args]


# A custom dump on stdin: pg_restore turns it into SQL, psql applies it inside our own
# BEGIN, after the wipe; COMMIT only if pg_restore read the dump to its end (else an
# exception ends the transaction). pg_restore writing a script holds no COPY row in memory
# (its `-d` mode buffered a 100 MiB field twice over, in the database's own container).
_CUSTOM_RESTORE = (
    'export PGPASSWORD="${POSTGRES_PASSWORD:-$PGPASSWORD}"; '
    'u="${POSTGRES_USER:-${PGUSER:-postgres}}"; '
    '{ printf "BEGIN;\\n%s\\n" "$1"; '
    "if pg_restore --no-owner --clean --if-exists -f -; "
    'then printf "\\n;\\n%sCOMMIT;\\n" "$3"; '
    "else printf '\\n\\\\.\\n;\\n%s\\n' \"$2\"; fi; } "
    '| psql -U "$u" -X -q -v ON_ERROR_STOP=1 -d "$0"'
)
# The same with the file's sha256 gate. pg_restore reads the dump straight off stdin (no
# `head -c` cutting it out of the stream: a pipe more in the pod, ~1.5 CPU s per GB) and
# stops at its end. After the dump come GATE_FILLER bytes (what pg_restore's stdio reads
# ahead past the end is taken from them) and the seal, the client's last bytes: this
# restore's nonce (random, so that no file can end with it) and the sha256 the client
# computed of the file as it streamed. COMMIT only if pg_restore read the dump to its end
# AND stdin ends with the nonce and the sidecar's sha256 ($3): a stream cut short, or a
# file whose digest differs, never does.
_CUSTOM_RESTORE_GATED = (
    'export PGPASSWORD="${POSTGRES_PASSWORD:-$PGPASSWORD}"; '
    'u="${POSTGRES_USER:-${PGUSER:-postgres}}"; '
    '{ printf "BEGIN;\\n%s\\n" "$1"; '
    "if pg_restore --no-owner --clean --if-exists -f -; then "
    'if [ "$(tail -c ${#3})" = "$3" ]; then printf "\\n;\\n%sCOMMIT;\\n" "$5"; '
    "else printf '\\n;\\n%s\\n' \"$4\"; fi; "
    "else printf '\\n\\\\.\\n;\\n%s\\n' \"$2\"; fi; } "
    '| psql -U "$u" -X -q -v ON_ERROR_STOP=1 -d "$0"'
)
_READ_FAILED = "DO $$BEGIN RAISE EXCEPTION 'pg_restore could not read the dump to its end'; END$$;"
DIGEST_DIFFERS = (
    "DO $$BEGIN RAISE EXCEPTION 'the backup''s sha256 differs from its sidecar'; END$$;"
)
# Bytes between a gated custom dump and its seal: more than pg_restore's stdio reads ahead
# (one buffer, 4 KiB on Linux pipes; a margin for other libcs and compressors).
GATE_FILLER = 64 * 1024


@dataclass(frozen=True)
class Gate:
    """What follows a custom dump on its way into a gated restore: GATE_FILLER bytes, then
    the seal, ``nonce`` and the sha256 the client computed of the file. The pod commits
    only if the seal is ``nonce`` and ``sha256`` (the sidecar's)."""

    sha256: str
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))

    def trailer(self, digest: str) -> bytes:
        return b"\n" * GATE_FILLER + (self.nonce + digest).encode()

    @property
    def trailer_size(self) -> int:
        return GATE_FILLER + len(self.nonce) + len(self.sha256)


def restore_command(database: str, fmt: DumpFormat, *, gate: Gate | None = None) -> list[str]:
    """The command that restores a dump arriving on stdin, in one transaction that first
    empties the database (see WIPE_DATABASE); a custom dump's prints ROWS_RECEIVED's lines
    before its COMMIT (a plain dump's COMMIT and those lines are the client's).

    ``gate`` (custom format): the dump on stdin is followed by ``gate.trailer`` of the
    sha256 the client computed of the file as it sent it, and the transaction commits only
    if that is the sidecar's. (A plain dump's COMMIT is sent by the client itself, only
    when they are: see ``restore._restore_stream``.)
    """
    if fmt == "custom":
        if gate is not None:
            return [
                "sh",
                "-c",
                _CUSTOM_RESTORE_GATED,
                database,
                WIPE_DATABASE.decode(),
                _READ_FAILED,
                gate.nonce + gate.sha256,
                DIGEST_DIFFERS,
                ROWS_RECEIVED,
            ]
        return [
            "sh",
            "-c",
            _CUSTOM_RESTORE,
            database,
            WIPE_DATABASE.decode(),
            _READ_FAILED,
            ROWS_RECEIVED,
        ]
    # The transaction is ours (BEGIN, the wipe ... COMMIT around the stream, see
    # restore_backup), so a stream cut short never reaches COMMIT: psql's
    # --single-transaction would commit whatever arrived before the cut at EOF.
    return pg_command("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database)


def row_counts_command(database: str) -> list[str]:
    """psql printing ``schema.table<TAB>rows`` for every table, exact (``count(*)``)."""
    return pg_command(
        "psql", "-X", "-q", "-A", "-t", "-F", "\t", "-d", database, "-c", _ROW_COUNTS_SQL
    )


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
