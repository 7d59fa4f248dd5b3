"""Backups you can trust: dump, verify, restore, list, and ship to the backup daemon.

Every function takes a ``CommandRunner`` for where the PostgreSQL tools run: ``PodExec``
(the postgres pod, over the exec API) for the tasks, ``LocalRunner`` (a local subprocess)
for tests and local tools. So the file handling, hashing and format checks below are the
same code whichever way the bytes arrive.

Commands run with the pod's own credentials: the shell in the pod expands
``$POSTGRES_USER``/``$POSTGRES_PASSWORD``; no value crosses the wire or shows in a plan.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Generic, Literal, TypeVar

from ops.config import Settings
from ops.errors import (
    BackupError,
    ClusterError,
    CorruptBackup,
    DumpFailed,
    ExecFailed,
    OpsError,
    RestoreFailed,
)
from ops.execstream import (
    CHUNK_SIZE,
    CommandRunner,
    ExecResult,
    Progress,
    StderrTail,
    program_name,
)
from ops.pgformat import (
    HEAD_BYTES,
    DumpFormat,
    DumpHeader,
    plain_drops_first,
    plain_is_complete,
    read_file_header,
    read_header,
)

if TYPE_CHECKING:
    from ops.kube import KubeTarget

ProgressFactory = Callable[[str, int | None], AbstractContextManager[Progress]]
Where = Literal["local", "daemon"]

SIDECAR_SUFFIX = ".json"
EXTENSIONS: Mapping[DumpFormat, str] = {"custom": ".dump", "plain": ".sql"}
DAEMON_DIR = "/backups"
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


def _no_progress(_description: str, _total: int | None) -> AbstractContextManager[Progress]:
    return contextlib.nullcontext(lambda _n: None)


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where the database lives: a runner for its tools plus names for the sidecar."""

    runner: CommandRunner
    database: str
    context: str
    namespace: str
    pod: str


@dataclass(frozen=True, kw_only=True)
class BackupInfo:
    """The JSON sidecar ``<file>.json`` written next to every local backup."""

    file: str
    sha256: str
    size: int
    database: str
    format: DumpFormat
    compression: str
    server_version: str
    source_context: str
    source_namespace: str
    source_pod: str
    created: str  # ISO 8601, UTC

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> BackupInfo:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__})
        except FileNotFoundError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptBackup(f"sidecar {path} is unreadable ({exc})") from exc


@dataclass(frozen=True, kw_only=True)
class Verification:
    """The outcome of ``verify_backup``: every check that ran, in order."""

    path: Path
    header: DumpHeader
    checks: tuple[str, ...]
    info: BackupInfo | None
    stat: tuple[int, int] = (0, 0)  # size and mtime (ns) of the file that was checked

    def still_valid(self) -> bool:
        """The file is the one that was checked (same size and modification time)."""
        return self.stat != (0, 0) and _stat_of(self.path) == self.stat


def _stat_of(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True, kw_only=True)
class ListedBackup:
    name: str
    where: Where
    size: int
    modified: datetime
    format: str
    verified: str


@dataclass(frozen=True, kw_only=True)
class RestoreReport:
    file: Path
    database: str
    tables: Mapping[str, int]
    safety_backup: Path | None

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


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


# --- files -----------------------------------------------------------------------------


def backup_name(database: str, context: str, fmt: DumpFormat, when: datetime) -> str:
    safe_context = re.sub(r"[^A-Za-z0-9_.-]", "_", context)
    return f"{database}-{safe_context}-{when:%Y%m%d-%H%M%S}{EXTENSIONS[fmt]}"


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


# Large reads into one reused buffer: hashlib lets go of the GIL while it hashes a chunk,
# so fewer, larger chunks leave the GIL to a thread working beside it (prepare_restore).
_HASH_CHUNK = 8 * 1024 * 1024


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
            if progress is not None:
                progress(n)
    return digest.hexdigest()


class HashingWriter:
    """Writes through to a file while hashing, counting and keeping the first bytes."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = bytearray()

    def write(self, data: bytes | memoryview) -> int:
        self.f.write(data)
        self.digest.update(data)
        self.size += len(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        return len(data)


def _open_exclusive(path: Path) -> IO[bytes]:
    return path.open("xb")


def _publish(part: Path, directory: Path, name: str) -> Path:
    """Give ``part`` its final name without ever replacing a file (a hard link is atomic
    and fails if the name exists); on a clash, the next free ``-2``, ``-3`` ... name."""
    stem, dot, ext = name.partition(".")
    for n in range(1, 100):
        final = directory / (name if n == 1 else f"{stem}-{n}{dot}{ext}")
        try:
            os.link(part, final)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some network or FAT file systems)
            if final.exists():
                continue
            os.rename(part, final)
            return final
        part.unlink()
        return final
    raise BackupError(f"no free name for {name} in {directory}")


# --- backup ----------------------------------------------------------------------------


def take_backup(
    source: Source,
    *,
    backups_dir: Path,
    fmt: DumpFormat = "custom",
    compression: int = 0,
    progress: ProgressFactory = _no_progress,
    opener: Callable[[Path], IO[bytes]] = _open_exclusive,
    now: datetime | None = None,
) -> tuple[Path, BackupInfo]:
    """pg_dump into ``backups_dir/<db>-<context>-<time>.<ext>`` via a ``.part`` file.

    The file gets its name only after exit status 0, non-empty output and the right
    format; then the sidecar records its sha256. Any failure (Ctrl-C included) removes
    the ``.part``.
    """
    when = now or datetime.now(UTC)
    backups_dir.mkdir(parents=True, exist_ok=True)
    name = backup_name(source.database, source.context, fmt, when)
    part = backups_dir / f"{name}.{secrets.token_hex(4)}.part"
    try:
        with opener(part) as f:
            writer = HashingWriter(f)
            with progress(f"pg_dump {source.database}", None) as advance:
                try:
                    source.runner.run(
                        dump_command(source.database, fmt, compression),
                        stdout=writer,  # type: ignore[arg-type]
                        progress=advance,
                    )
                except ExecFailed as exc:
                    raise DumpFailed(
                        f"backup of {source.database!r} failed: {exc.message}",
                        database=source.database,
                    ) from exc
            f.flush()
            os.fsync(f.fileno())
        header = _check_dump_stream(writer, fmt, source.database, part)
        info = BackupInfo(
            file=name,
            sha256=writer.digest.hexdigest(),
            size=writer.size,
            database=source.database,
            format=fmt,
            compression=header.compression or "none",
            server_version=header.server_version,
            source_context=source.context,
            source_namespace=source.namespace,
            source_pod=source.pod,
            created=when.isoformat(timespec="seconds"),
        )
        final = _publish(part, backups_dir, name)
        if final.name != name:
            info = BackupInfo(**{**asdict(info), "file": final.name})
        info.write(sidecar_of(final))
        return final, info
    except OSError as exc:
        raise BackupError(
            f"cannot write the backup in {backups_dir}: {exc.strerror or exc}",
            hint="Free some disk space (or point --backups-dir elsewhere); "
            "nothing partial was kept.",
        ) from exc
    finally:
        part.unlink(missing_ok=True)


def _check_dump_stream(
    writer: HashingWriter, fmt: DumpFormat, database: str, part: Path
) -> DumpHeader:
    if writer.size == 0:
        raise DumpFailed("pg_dump exited 0 but wrote nothing; nothing was kept")
    try:
        header = read_header(bytes(writer.head), name="the dump")
    except CorruptBackup as exc:
        raise DumpFailed(f"pg_dump's output is not a dump: {exc.message}") from exc
    if header.format != fmt:
        raise DumpFailed(f"asked pg_dump for {fmt} format, got {header.format}")
    if fmt == "custom" and header.database != database:
        raise DumpFailed(f"the dump is of database {header.database!r}, not {database!r}")
    if fmt == "plain" and not plain_is_complete(part):
        raise DumpFailed("the plain dump has no 'dump complete' trailer; nothing was kept")
    return header


def prune_local(backups_dir: Path, keep: int, *, protect: Sequence[Path] = ()) -> list[Path]:
    """Keep the newest ``keep`` backups (with sidecars); never delete a protected one."""
    protected = {p.resolve() for p in protect}
    files = sorted(
        (p for p in _local_backup_files(backups_dir)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    removed = []
    for path in files[keep:]:
        if path.resolve() in protected:
            continue
        path.unlink(missing_ok=True)
        sidecar_of(path).unlink(missing_ok=True)
        removed.append(path)
    return removed


def _local_backup_files(backups_dir: Path) -> list[Path]:
    if not backups_dir.is_dir():
        return []
    return [
        p
        for p in backups_dir.iterdir()
        if p.is_file() and p.suffix in (".dump", ".sql") and not p.name.startswith(".")
    ]


# --- verify ----------------------------------------------------------------------------


def verify_backup(
    path: Path,
    *,
    full_reader: CommandRunner | None,
    progress: ProgressFactory = _no_progress,
    require_sidecar: bool = True,
) -> Verification:
    """Check a local backup: sidecar sha256 and size, format, and a full read.

    ``full_reader`` runs ``pg_restore`` for the full read of a custom dump (None: skip it,
    and say so in the checks). Raises CorruptBackup on the first failed check.
    """
    if not path.is_file():
        raise CorruptBackup(f"{path} does not exist", hint="`inv backup.list` shows the backups.")
    checks: list[str] = []
    stat = _stat_of(path)
    size = stat[0]
    info: BackupInfo | None = None
    try:
        info = BackupInfo.read(sidecar_of(path))
    except FileNotFoundError:
        if require_sidecar:
            raise CorruptBackup(
                f"{path} has no sidecar {sidecar_of(path).name}; its checksum is unknown",
                hint="Only restore files made by `inv backup.now`, or pass --no-sidecar "
                "if you trust this file.",
            ) from None
    if info is not None:
        if info.size != size:
            raise CorruptBackup(
                f"{path} is {size} bytes, its sidecar says {info.size}: truncated or altered"
            )
        with progress(f"sha256 {path.name}", size) as advance:
            digest = sha256_of(path, advance)
        if digest != info.sha256:
            raise CorruptBackup(f"{path}: sha256 differs from its sidecar (the file was altered)")
        checks.append("sha256 matches the sidecar")
    header = read_file_header(path)
    checks.append(
        f"{header.format} format"
        + (f", archive {header.archive_version}" if header.archive_version else "")
    )
    if info is not None and info.format != header.format:
        raise CorruptBackup(f"{path} is {header.format}, its sidecar says {info.format}")
    if header.format == "plain":
        if not plain_is_complete(path):
            raise CorruptBackup(f"{path} is cut short: no 'dump complete' trailer")
        checks.append("plain dump ends with pg_dump's trailer")
    elif full_reader is not None:
        with path.open("rb") as f, progress(f"full read {path.name}", size) as advance:
            result = full_reader.run(
                full_read_command(), stdin=f, stdin_size=size, check=False, progress=advance
            )
        if result.exit_code != 0:
            raise CorruptBackup(
                f"{path} does not read to the end: {result.stderr_tail or 'pg_restore failed'}"
            )
        checks.append(f"full read by pg_restore ({full_reader.where})")
    elif info is not None:
        checks.append("full read skipped (the sha256 is that of pg_dump's complete output)")
    else:
        checks.append("full read skipped (no pg_restore to read it with)")
    return Verification(path=path, header=header, checks=tuple(checks), info=info, stat=stat)


def row_counts(runner: CommandRunner, database: str) -> dict[str, int]:
    """Exact row counts of every table (``count(*)``), for drills and restore reports."""
    result = runner.run(
        pg_command("psql", "-X", "-q", "-A", "-t", "-F", "\t", "-d", database, "-c", _ROW_COUNTS)
    )
    counts: dict[str, int] = {}
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        if "\t" in line:
            table, count = line.rsplit("\t", 1)
            counts[table] = int(count)
    return counts


def drill(
    path: Path, source: Source, *, progress: ProgressFactory = _no_progress
) -> tuple[dict[str, int], dict[str, int]]:
    """Restore into a scratch database next to the live one, count rows in both, drop it.

    Returns (restored counts, live counts). The scratch database is dropped whatever happens.
    """
    header = read_file_header(path)
    scratch = f"{source.database}_drill_{secrets.token_hex(4)}"
    runner = source.runner
    runner.run(pg_command("createdb", scratch))
    try:
        _restore_stream(runner, path, scratch, header.format, progress)
        restored = row_counts(runner, scratch)
    finally:
        runner.run(pg_command("dropdb", "--if-exists", scratch), check=False)
    return restored, row_counts(runner, source.database)


# --- restore ---------------------------------------------------------------------------


class _Concat(io.RawIOBase):
    """A read-only stream of several streams one after the other."""

    def __init__(self, parts: Sequence[IO[bytes]]) -> None:
        self._parts = list(parts)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._parts:
            data = self._parts[0].read(size)
            if data:
                return data
            self._parts.pop(0)
        return b""


def _restore_stream(
    runner: CommandRunner,
    path: Path,
    database: str,
    fmt: DumpFormat,
    progress: ProgressFactory,
) -> ExecResult:
    size = path.stat().st_size
    with path.open("rb") as f, progress(f"restore {path.name}", size) as advance:
        if fmt == "custom":
            stream: IO[bytes] = f
            total = size
        else:
            begin, commit = b"BEGIN;\n", b"\n;\nCOMMIT;\n"
            if not plain_drops_first(path):
                # Made without --clean (the daemon's dumps): clear the schema it fills first,
                # inside the same transaction, so the restore replaces instead of colliding.
                begin += RECREATE_PUBLIC
            stream = _Concat([io.BytesIO(begin), f, io.BytesIO(commit)])  # type: ignore[assignment]
            total = size + len(begin) + len(commit)
        try:
            return runner.run(
                restore_command(database, fmt), stdin=stream, stdin_size=total, progress=advance
            )
        except ExecFailed as exc:
            raise RestoreFailed(
                f"restore of {path.name} into {database!r} failed, nothing was changed: "
                f"{exc.message}",
                database=database,
            ) from exc


def restore_backup(
    path: Path,
    source: Source,
    *,
    full_reader: CommandRunner | None,
    backups_dir: Path,
    safety_backup: bool = True,
    compression: int = 0,
    require_sidecar: bool = True,
    progress: ProgressFactory = _no_progress,
    verified: Verification | None = None,
) -> RestoreReport:
    """Verify ``path``, take a safety backup, then restore it in one transaction.

    ``verified``: a check of this file made before (while the user read the plan); it
    stands if the file has not changed since, else the file is checked again.
    """
    verification = verified
    if verification is None or verification.path != path or not verification.still_valid():
        verification = verify_backup(
            path, full_reader=full_reader, progress=progress, require_sidecar=require_sidecar
        )
    safety = None
    if safety_backup:
        safety, _ = take_backup(
            source, backups_dir=backups_dir, compression=compression, progress=progress
        )
    _restore_stream(source.runner, path, source.database, verification.header.format, progress)
    return RestoreReport(
        file=path,
        database=source.database,
        tables=row_counts(source.runner, source.database),
        safety_backup=safety,
    )


# --- listing ---------------------------------------------------------------------------


def list_local(backups_dir: Path) -> list[ListedBackup]:
    found = []
    for path in _local_backup_files(backups_dir):
        stat = path.stat()
        try:
            info: BackupInfo | None = BackupInfo.read(sidecar_of(path))
        except (FileNotFoundError, CorruptBackup):
            info = None
        if info is None:
            verified = "no sidecar"
        elif info.size != stat.st_size:
            verified = "SIZE MISMATCH"
        else:
            verified = "sidecar (size ok)"
        found.append(
            ListedBackup(
                name=path.name,
                where="local",
                size=stat.st_size,
                modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                format=info.format if info else ("custom" if path.suffix == ".dump" else "plain"),
                verified=verified,
            )
        )
    return found


_LIST_DAEMON = (
    'cd "$0" || exit 1; for f in *.sql *.dump; do [ -f "$f" ] || continue; '
    's=missing; [ -f "$f.sha256" ] && { if sha256sum -c "$f.sha256" >/dev/null 2>&1; '
    "then s=ok; else s=BAD; fi; }; "
    'printf "%s|%s|%s|%s\\n" "$f" "$(wc -c < "$f")" "$(date -r "$f" +%s)" "$s"; done'
)
_LIST_DAEMON_FAST = _LIST_DAEMON.replace(
    'if sha256sum -c "$f.sha256" >/dev/null 2>&1; then s=ok; else s=BAD; fi;', "s=sidecar;"
)


def list_daemon(
    runner: CommandRunner, *, check: bool = False, directory: str = DAEMON_DIR
) -> list[ListedBackup]:
    """Backups in the daemon's volume; ``check`` re-hashes each one in the pod."""
    script = _LIST_DAEMON if check else _LIST_DAEMON_FAST
    result = runner.run(["sh", "-c", script, directory])
    found = []
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        parts = line.split("|")
        if len(parts) != 4:
            continue
        name, size, mtime, status = parts
        found.append(
            ListedBackup(
                name=name,
                where="daemon",
                size=int(size),
                modified=datetime.fromtimestamp(int(mtime), UTC),
                format="custom" if name.endswith(".dump") else "plain",
                verified={
                    "ok": "sha256 ok",
                    "BAD": "SHA256 MISMATCH",
                    "missing": "no sidecar",
                    "sidecar": "sidecar",
                }.get(status, status),
            )
        )
    return found


# --- the daemon's volume ---------------------------------------------------------------

# $1 name, $2 size, $3 sha256. Self-cleaning: whatever happens, no .part stays behind, and
# `ln` (atomic, fails if the name exists) means an existing backup is never replaced.
_RECEIVE = r"""
dir="$0"; name="$1"; size="$2"; sum="$3"
part="$dir/.$name.$$.part"; final="$dir/$name"; tmpsum="$dir/.$name.$$.sha256.part"
trap 'rm -f "$part" "$tmpsum"' EXIT
trap 'exit 130' INT TERM HUP
if [ -e "$final" ]; then echo "$final already exists in the daemon's volume" >&2; exit 17; fi
head -c "$size" > "$part" || exit 1
got=$(wc -c < "$part")
if [ "$got" -ne "$size" ]; then echo "received $got of $size bytes" >&2; exit 1; fi
set -- $(sha256sum "$part")
if [ "$1" != "$sum" ]; then echo "sha256 in the pod is $1, expected $sum" >&2; exit 1; fi
printf '%s  %s\n' "$sum" "$name" > "$tmpsum" || exit 1
if ! ln "$part" "$final" 2>/dev/null; then echo "$final already exists" >&2; exit 17; fi
mv "$tmpsum" "$final.sha256"
echo "$sum"
"""


def send_to_daemon(
    path: Path,
    runner: CommandRunner,
    *,
    name: str | None = None,
    progress: ProgressFactory = _no_progress,
    directory: str = DAEMON_DIR,
) -> str:
    """Stream a local backup into the daemon's ``/backups`` and check its sha256 in the pod.

    Returns the sha256 the pod computed (equal to the local one, or this raised).
    """
    name = name or path.name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise BackupError(f"{name!r} is not a usable backup file name")
    size = path.stat().st_size
    with progress(f"sha256 {path.name}", size) as advance:
        digest = sha256_of(path, advance)
    with path.open("rb") as f, progress(f"upload {name}", size) as advance:
        try:
            result = runner.run(
                ["sh", "-c", _RECEIVE, directory, name, str(size), digest],
                stdin=f,
                stdin_size=size,
                progress=advance,
            )
        except ExecFailed as exc:
            if "already exists" in exc.message:
                raise BackupError(
                    f"{name} already exists in the daemon's volume; nothing was overwritten",
                    hint="Pick another name with --name.",
                ) from exc
            raise BackupError(f"upload of {name} failed: {exc.message}") from exc
    remote = result.stdout.decode().strip()
    if remote != digest:
        raise CorruptBackup(f"the pod reports sha256 {remote!r}, expected {digest}")
    return remote


def prune_daemon(runner: CommandRunner) -> str:
    """Apply the daemon's own retention (``sh /scripts/backup.sh prune``)."""
    result = runner.run(["sh", "/scripts/backup.sh", "prune"])
    return result.stdout.decode("utf-8", errors="replace").strip()


_SEND = r"""
cd "$0" || exit 1
[ -f "$1" ] || { echo "$1 is not in $0" >&2; exit 2; }
[ -f "$1.sha256" ] || { echo "$1 has no $1.sha256 sidecar" >&2; exit 3; }
sha256sum -c "$1.sha256" >&2 || exit 4
exec cat "$1"
"""


def fetch_from_daemon(
    name: str,
    runner: CommandRunner,
    *,
    backups_dir: Path,
    source: Source,
    progress: ProgressFactory = _no_progress,
    directory: str = DAEMON_DIR,
) -> Path:
    """Copy a daemon backup into ``backups_dir`` (checked in the pod, then again here)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise BackupError(f"{name!r} is not a backup file name")
    expected = runner.run(["sh", "-c", 'cat "$0/$1.sha256"', directory, name], check=False)
    if expected.exit_code != 0:
        raise CorruptBackup(f"{name} (or its .sha256 sidecar) is not in the daemon's volume")
    digest_expected = expected.stdout.decode().split()[0] if expected.stdout.split() else ""
    backups_dir.mkdir(parents=True, exist_ok=True)
    part = backups_dir / f"{name}.{secrets.token_hex(4)}.part"
    try:
        with part.open("xb") as f, progress(f"download {name}", None) as advance:
            writer = HashingWriter(f)
            try:
                runner.run(
                    ["sh", "-c", _SEND, directory, name],
                    stdout=writer,  # type: ignore[arg-type]
                    progress=advance,
                )
            except ExecFailed as exc:
                raise CorruptBackup(f"cannot read {name} from the daemon: {exc.message}") from exc
        if writer.digest.hexdigest() != digest_expected:
            raise CorruptBackup(f"{name}: the download's sha256 differs from the daemon's sidecar")
        header = read_header(bytes(writer.head), name=name)
        info = BackupInfo(
            file=name,
            sha256=digest_expected,
            size=writer.size,
            database=header.database or source.database,
            format=header.format,
            compression=header.compression or "none",
            server_version=header.server_version,
            source_context=source.context,
            source_namespace=source.namespace,
            source_pod=f"{runner.where} {directory}/{name}",
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        final = _publish(part, backups_dir, name)
        info = BackupInfo(**{**asdict(info), "file": final.name})
        info.write(sidecar_of(final))
        return final
    finally:
        part.unlink(missing_ok=True)


# --- a local runner --------------------------------------------------------------------


@dataclass
class LocalRunner:
    """Runs commands as local subprocesses (local PostgreSQL tools, and the tests).

    The same ``sh -c`` commands as in the pod run here, with the credentials in ``env``
    (``POSTGRES_USER``/``POSTGRES_PASSWORD`` plus ``PGHOST``/``PGPORT``).
    """

    env: Mapping[str, str] | None = None
    chunk_size: int = CHUNK_SIZE
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def where(self) -> str:
        return "this machine"

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdin_size: int | None = None,
        stdout: IO[bytes] | None = None,
        check: bool = True,
        progress: Progress | None = None,
    ) -> ExecResult:
        if os.name == "nt":  # the pod's /dev/null, for local tools on Windows
            argv = [os.devnull if word == "/dev/null" else word for word in argv]
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(self.env) if self.env is not None else None,
        )
        self.processes.append(proc)
        tail = StderrTail()
        captured = bytearray()
        fed = 0
        feed_error: list[BaseException] = []

        def feed() -> None:
            nonlocal fed
            assert proc.stdin is not None and stdin is not None
            try:
                while chunk := stdin.read(self.chunk_size):
                    proc.stdin.write(chunk)
                    fed += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
            except BrokenPipeError:
                pass
            except BaseException as exc:
                feed_error.append(exc)
                proc.kill()
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        def drain_stderr() -> None:
            assert proc.stderr is not None
            while chunk := proc.stderr.read1(65536):  # type: ignore[attr-defined]
                tail.add(chunk)

        threads = [threading.Thread(target=drain_stderr, daemon=True)]
        if stdin is not None:
            threads.append(threading.Thread(target=feed, daemon=True))
        for thread in threads:
            thread.start()
        out = 0
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(self.chunk_size):  # type: ignore[attr-defined]
                if stdout is not None:
                    stdout.write(chunk)
                    if progress is not None and stdin is None:
                        progress(len(chunk))
                else:
                    captured += chunk
                out += len(chunk)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for thread in threads:
                thread.join(timeout=5)
        if feed_error:
            raise feed_error[0]
        result = ExecResult(
            exit_code=code,
            stderr_tail=tail.text(),
            stdout_bytes=out,
            stdin_bytes=fed,
            stdout=bytes(captured),
        )
        if check and code != 0:
            raise ExecFailed(
                f"{program_name(argv)} on {self.where} exited with {code}"
                + (f": {result.stderr_tail}" if result.stderr_tail else "")
            )
        return result


def iter_rows(listed: Sequence[ListedBackup], now: datetime) -> Iterator[list[str]]:
    for b in sorted(listed, key=lambda b: b.modified, reverse=True):
        yield [b.name, b.where, _age(now - b.modified), _size(b.size), b.format, b.verified]


def _age(delta: object) -> str:
    seconds = int(delta.total_seconds()) if hasattr(delta, "total_seconds") else 0
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit} ago"
    return f"{seconds}s ago"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# --- the cluster: where the tasks run ---------------------------------------------------


def human_size(n: int) -> str:
    return _size(n)


def _target(settings: Settings) -> KubeTarget:
    from ops.kube import resolve_target

    return resolve_target(settings)


def ensure_running(target: KubeTarget, pod: str) -> None:
    """NotFound if the pod does not exist, ClusterError if it is not running."""
    from kubernetes.client import CoreV1Api

    from ops.kube import api_client, api_errors

    with api_errors("pod", name=pod, namespace=target.namespace):
        found = CoreV1Api(api_client(target)).read_namespaced_pod(pod, target.namespace)
    phase = found.status.phase if found.status else None
    deleting = found.metadata is not None and found.metadata.deletion_timestamp is not None
    if phase != "Running" or deleting:
        state = "being deleted" if deleting else (phase or "unknown")
        raise ClusterError(
            f"pod {pod!r} in namespace {target.namespace!r} is {state}, not Running",
            hint="Wait until it runs (`kubectl get pod -w`), then try again.",
            pod=pod,
            namespace=target.namespace,
        )


def _restore_source(settings: Settings) -> Source:
    """The pod to restore into, with its exec protocol already learned."""
    from ops.execstream import PodExec

    source = pod_source(settings)
    if isinstance(source.runner, PodExec):
        source.runner.protocol()
    return source


def pod_source(settings: Settings) -> Source:
    """The postgres pod as a backup source, checked to be running."""
    from ops.execstream import PodExec

    target = _target(settings)
    ensure_running(target, settings.postgres_pod)
    return Source(
        runner=PodExec(target, settings.postgres_pod),
        database=settings.database,
        context=target.context,
        namespace=target.namespace,
        pod=settings.postgres_pod,
    )


def daemon_runner(settings: Settings) -> CommandRunner:
    """A runner in a running pod of the backup daemon's Deployment."""
    from kubernetes.client import AppsV1Api, CoreV1Api

    from ops.execstream import PodExec
    from ops.kube import api_client, api_errors

    target = _target(settings)
    name = settings.backup_daemon
    with api_errors("Deployment", name=name, namespace=target.namespace):
        client = api_client(target)
        deployment = AppsV1Api(client).read_namespaced_deployment(name, target.namespace)
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = CoreV1Api(client).list_namespaced_pod(target.namespace, label_selector=selector)
    running = [
        (p.metadata.creation_timestamp, p.metadata.name)
        for p in pods.items
        if p.status
        and p.status.phase == "Running"
        and p.metadata is not None
        and p.metadata.deletion_timestamp is None
        and p.metadata.name
    ]
    if not running:
        raise ClusterError(
            f"no running pod of Deployment {name!r} in namespace {target.namespace!r}",
            hint="Check the daemon with `kubectl get pods`; it may still be starting.",
        )
    _, newest = max(running, key=lambda p: (str(p[0]), str(p[1])))
    return PodExec(target, str(newest))


def backup_plan(settings: Settings) -> list[tuple[str, str]]:
    from ops.kube import resolve_target

    target = resolve_target(settings)
    fmt: DumpFormat = settings.backup_format
    name = backup_name(settings.database, target.context, fmt, datetime.now(UTC))
    return [
        ("context", target.context),
        ("namespace", target.namespace),
        ("pod", settings.postgres_pod),
        ("database", settings.database),
        (
            "format",
            fmt + (f", compression {settings.backup_compression}" if fmt == "custom" else ""),
        ),
        ("file", str(settings.backups_dir / name)),
        ("keep", f"newest {settings.backup_keep} local backups"),
    ]


def backup_now(
    settings: Settings, *, progress: ProgressFactory = _no_progress
) -> tuple[Path, BackupInfo]:
    return take_backup(
        pod_source(settings),
        backups_dir=settings.backups_dir,
        fmt=settings.backup_format,
        compression=settings.backup_compression,
        progress=progress,
    )


def full_reader_for(settings: Settings, reader: str) -> CommandRunner | None:
    import shutil

    if reader == "skip":
        return None
    if reader == "local" or (reader == "auto" and shutil.which("pg_restore")):
        if not shutil.which("pg_restore"):
            raise BackupError(
                "pg_restore is not installed here", hint="Use --reader pod to read it in the pod."
            )
        return LocalRunner()
    if reader in ("pod", "auto"):
        return pod_source(settings).runner
    raise BackupError(f"--reader must be auto, local, pod or skip, not {reader!r}")


def verify_file(
    settings: Settings,
    path: Path,
    *,
    reader: str = "auto",
    require_sidecar: bool = True,
    progress: ProgressFactory = _no_progress,
) -> Verification:
    full_reader = None
    if path.is_file() and read_file_header(path).format == "custom":
        full_reader = full_reader_for(settings, reader)
    return verify_backup(
        path, full_reader=full_reader, progress=progress, require_sidecar=require_sidecar
    )


def drill_in_pod(
    settings: Settings, path: Path, *, progress: ProgressFactory = _no_progress
) -> tuple[dict[str, int], dict[str, int]]:
    return drill(path, pod_source(settings), progress=progress)


def to_daemon_plan(settings: Settings, path: Path, name: str) -> list[tuple[str, str]]:
    from ops.kube import resolve_target

    if not path.is_file():
        raise CorruptBackup(f"{path} does not exist")
    target = resolve_target(settings)
    return [
        ("context", target.context),
        ("namespace", target.namespace),
        ("daemon", f"Deployment {settings.backup_daemon}, {DAEMON_DIR}/{name}"),
        ("file", f"{path} ({human_size(path.stat().st_size)})"),
        ("then", "check sha256 in the pod; sh /scripts/backup.sh prune"),
    ]


def to_daemon(
    settings: Settings, path: Path, *, name: str, progress: ProgressFactory = _no_progress
) -> tuple[str, str, str]:
    """Verify locally, upload, check in the pod, prune there. (pod, sha256, prune output)"""
    verify_backup(path, full_reader=None, progress=progress, require_sidecar=False)
    runner = daemon_runner(settings)
    digest = send_to_daemon(path, runner, name=name, progress=progress)
    return runner.where, digest, prune_daemon(runner)


def list_all(
    settings: Settings, *, check: bool = False, daemon: bool = True
) -> tuple[list[ListedBackup], str]:
    """Local and daemon backups; the second value says why the daemon was not listed."""
    listed = list_local(settings.backups_dir)
    if check:
        listed = [_rehash(settings.backups_dir, b) for b in listed]
    problem = ""
    if daemon:
        try:
            listed += list_daemon(daemon_runner(settings), check=check)
        except OpsError as exc:
            problem = f"daemon backups not listed: {exc.message}"
    return listed, problem


def _rehash(backups_dir: Path, listed: ListedBackup) -> ListedBackup:
    path = backups_dir / listed.name
    try:
        info = BackupInfo.read(sidecar_of(path))
    except (FileNotFoundError, CorruptBackup):
        return listed
    ok = info.size == listed.size and sha256_of(path) == info.sha256
    return ListedBackup(**{**asdict(listed), "verified": "sha256 ok" if ok else "SHA256 MISMATCH"})


_T = TypeVar("_T")


class _InBackground(Generic[_T]):
    """``fn()`` in a daemon thread; ``result()`` waits for it and re-raises its error.

    A daemon thread, not an executor: a corrupt file must be reported at once, without
    waiting for a lookup stuck on an unreachable API server.
    """

    def __init__(self, fn: Callable[[], _T]) -> None:
        self._fn = fn
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:
            self._error = exc

    def result(self) -> _T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class RestoreSession:
    """A checked restore, ready to run once the user agreed to its plan."""

    source: Source | None
    settings: Settings
    path: Path | None
    daemon_name: str | None
    safety_backup: bool
    require_sidecar: bool
    plan: list[tuple[str, str]]
    verification: Verification | None = None


def prepare_restore(
    settings: Settings,
    *,
    file: Path | None,
    from_daemon: str | None,
    require_sidecar: bool = True,
    safety_backup: bool = True,
    dry_run: bool = False,
    progress: ProgressFactory = _no_progress,
) -> RestoreSession:
    """Check everything a restore needs (file first, then the pod) and build its plan.

    A local file is verified here — before anything touches the database. A daemon backup
    is fetched (checked in the pod and again here) by ``run_restore``, or only looked up
    on a dry run.
    """
    described: list[tuple[str, str]] = []
    verification = None
    # The pod lookup (with the Kubernetes client's import, ~0.7 s, and the exec protocol)
    # runs while the file is hashed: hashlib releases the GIL, so on two cores the two
    # overlap. A bad file is still reported first, and nothing touches the database before
    # both are done.
    pod_lookup = _InBackground(lambda: _restore_source(settings))
    if file is not None:
        verification = _verify_for_restore(
            file, require_sidecar, progress, pod=lambda: pod_lookup.result()
        )
        info = verification.info
        described = [
            ("file", str(file)),
            ("size", human_size(file.stat().st_size)),
            ("format", verification.header.format),
            ("created", info.created if info else "unknown (no sidecar)"),
            (
                "source database",
                (info.database if info else verification.header.database) or "unknown",
            ),
            ("checks", "; ".join(verification.checks)),
        ]
    source = pod_lookup.result()
    if from_daemon is not None:
        runner = daemon_runner(settings)
        match = [b for b in list_daemon(runner) if b.name == from_daemon]
        if not match:
            raise CorruptBackup(
                f"{from_daemon} is not in the daemon's {DAEMON_DIR}",
                hint="`inv backup.list` shows the daemon's backups.",
            )
        described = [
            ("file", f"{runner.where}:{DAEMON_DIR}/{from_daemon}"),
            ("size", human_size(match[0].size)),
            ("format", match[0].format),
            ("created", match[0].modified.isoformat(timespec="seconds")),
            ("checks", "sha256 against its .sha256 sidecar, in the pod and here, before restoring"),
        ]
    plan = [
        ("context", source.context),
        ("namespace", source.namespace),
        ("pod", source.pod),
        ("database", source.database),
        *described,
        ("safety backup", "yes, into " + str(settings.backups_dir) if safety_backup else "NO"),
        *_plain_note(file),
        ("how", "one transaction: on any error the database stays as it was"),
    ]
    return RestoreSession(
        source=source,
        settings=settings,
        path=file,
        daemon_name=from_daemon,
        safety_backup=safety_backup,
        require_sidecar=require_sidecar,
        plan=plan,
        verification=verification,
    )


def _plain_note(file: Path | None) -> list[tuple[str, str]]:
    if file is None or read_file_header(file).format != "plain" or plain_drops_first(file):
        return []
    return [("note", "dumped without --clean: schema public is dropped and recreated first")]


def _verify_for_restore(
    path: Path, require_sidecar: bool, progress: ProgressFactory, *, pod: Callable[[], Source]
) -> Verification:
    # With a sidecar, its sha256 proves the file is what pg_dump wrote after exiting 0;
    # without one, a full read (in the pod: the restoring pg_restore's own version) must.
    has_sidecar = sidecar_of(path).is_file()
    reader = None
    if not has_sidecar and path.is_file() and read_file_header(path).format == "custom":
        reader = pod().runner
    return verify_backup(
        path, full_reader=reader, progress=progress, require_sidecar=require_sidecar
    )


def run_restore(
    session: RestoreSession, *, progress: ProgressFactory = _no_progress
) -> RestoreReport:
    assert session.source is not None
    settings = session.settings
    path = session.path
    if session.daemon_name is not None:
        path = fetch_from_daemon(
            session.daemon_name,
            daemon_runner(settings),
            backups_dir=settings.backups_dir,
            source=session.source,
            progress=progress,
        )
    assert path is not None
    report = restore_backup(
        path,
        session.source,
        full_reader=None,
        backups_dir=settings.backups_dir,
        safety_backup=session.safety_backup,
        compression=settings.backup_compression,
        require_sidecar=session.require_sidecar,
        progress=progress,
        verified=session.verification,
    )
    protect = [path] + ([report.safety_backup] if report.safety_backup else [])
    prune_local(settings.backups_dir, settings.backup_keep, protect=protect)
    return report
