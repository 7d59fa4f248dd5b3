"""Restoring a backup in one transaction, drills into a scratch database, row counts."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from ops import agecrypt
from ops.backups.commands import (
    DIGEST_DIFFERS,
    ROWS_MARKER,
    ROWS_RECEIVED,
    WIPE_DATABASE,
    Gate,
    pg_command,
    restore_command,
    row_counts_command,
)
from ops.backups.dump import Source, take_backup
from ops.backups.files import ProgressFactory, Verification, no_progress, verify_backup
from ops.errors import (
    BackupKeyError,
    CorruptBackup,
    ExecFailed,
    RestoreFailed,
    RestoreInterrupted,
    ServerKilled,
    WrongDatabase,
)
from ops.execstream import CommandRunner
from ops.pgformat import DumpFormat, read_file_header


@dataclass(frozen=True, kw_only=True)
class RestoreReport:
    file: Path
    database: str
    tables: Mapping[str, int]
    safety_backup: Path | None

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def row_counts(runner: CommandRunner, database: str) -> dict[str, int]:
    """Exact row counts of every table (``count(*)``), for drills and restore reports."""
    result = runner.run(row_counts_command(database))
    return _table_counts(result.stdout.decode("utf-8", errors="replace").splitlines())


def _table_counts(lines: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        if "\t" in line:
            table, count = line.rsplit("\t", 1)
            counts[table] = int(count)
    return counts


class _RowsReceived:
    """The restore's stdout: keeps only ROWS_RECEIVED's lines (whatever else psql prints,
    e.g. the results of a plain dump's SELECTs, is dropped; memory stays a line)."""

    def __init__(self) -> None:
        self._partial = b""
        self.lines: list[str] = []

    def write(self, data: bytes | bytearray | memoryview) -> int:
        *complete, self._partial = (self._partial + bytes(data)).split(b"\n")
        prefix = ROWS_MARKER.encode() + b"\t"
        self.lines += [
            line[len(prefix) :].decode("utf-8", errors="replace")
            for line in complete
            if line.startswith(prefix)
        ]
        if len(self._partial) > len(prefix) and not self._partial.startswith(prefix):
            self._partial = b"-"  # the rest of a line we drop: kept short, never a match
        return len(data)

    def counts(self) -> dict[str, int]:
        return _table_counts(self.lines)


@dataclass(frozen=True, kw_only=True)
class DrillReport:
    """Rows per table, restored into the scratch database and in the live one."""

    restored: dict[str, int]
    live: dict[str, int]


def drill(
    path: Path,
    source: Source,
    *,
    progress: ProgressFactory = no_progress,
    identities: Sequence[agecrypt.Identity] | None = None,
) -> DrillReport:
    """Restore into a scratch database next to the live one, count rows in both, drop it.

    The scratch database is dropped whatever happens.
    """
    decrypt = None
    if agecrypt.file_is_encrypted(path):
        if identities is None:
            raise BackupKeyError(f"{path.name} is encrypted: a drill needs your identity")
        decrypt = verify_backup(
            path, full_reader=None, progress=progress, require_sidecar=False, identities=identities
        )
        header = decrypt.header
    else:
        header = read_file_header(path)
    scratch = f"{source.database}_drill_{secrets.token_hex(4)}"
    runner = source.runner
    runner.run(pg_command("createdb", scratch))
    try:
        restored = _restore_stream(
            runner, path, scratch, header.format, progress, decrypt, identities=identities or ()
        ) or row_counts(runner, scratch)
    finally:
        runner.run(pg_command("dropdb", "--if-exists", scratch), check=False)
    return DrillReport(restored=restored, live=row_counts(runner, source.database))


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


class _HashingReader:
    """A file read through once: its sha256 as the bytes pass (the restore's one pass)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._digest.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._f.readinto(buffer)  # type: ignore[attr-defined]
        self._digest.update(memoryview(buffer)[:n])
        return int(n)

    def hexdigest(self) -> str:
        """The digest of the whole file (what was not read yet, e.g. after age's final chunk,
        is read now)."""
        while self.read(1024 * 1024):
            pass
        return self._digest.hexdigest()


class _Trailer(io.RawIOBase):
    """Bytes made only when the stream reaches them (after the file: its digest)."""

    def __init__(self, make: Callable[[], bytes]) -> None:
        self._make = make
        self._data: io.BytesIO | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._data is None:
            self._data = io.BytesIO(self._make())
        return self._data.read(size)


def _restore_stream(
    runner: CommandRunner,
    path: Path,
    database: str,
    fmt: DumpFormat,
    progress: ProgressFactory,
    decrypt: Verification | None = None,
    identities: Sequence[agecrypt.Identity] = (),
    sha256: str | None = None,
) -> dict[str, int]:
    """Restore ``path`` into ``database``; the rows each table received (ROWS_RECEIVED,
    printed by the transaction itself before its COMMIT; empty if the server keeps no
    statistics: the caller counts then).

    ``decrypt``: the check of an encrypted file that decrypted it (its plaintext size);
    the file is then decrypted with ``identities`` on its way into the pod.

    ``sha256`` (the sidecar's): the file is hashed as it streams (the ciphertext, for an
    encrypted one) and the transaction commits only if the digest is this one; otherwise
    it rolls back and CorruptBackup says so.
    """
    size = path.stat().st_size
    hashed: _HashingReader | None = None
    with contextlib.ExitStack() as stack:
        f: IO[bytes] = stack.enter_context(path.open("rb"))
        if sha256 is not None:
            hashed = _HashingReader(f)
            f = cast(IO[bytes], hashed)
        if decrypt is not None:
            assert decrypt.plain_size is not None
            size = decrypt.plain_size
            reader = agecrypt.DecryptingReader(f, identities, name=path.name)
            f = cast(IO[bytes], stack.enter_context(reader))
        advance = stack.enter_context(progress(f"restore {path.name}", size))
        gate: Gate | None = None
        if fmt == "custom":
            if hashed is not None:
                digest_of, sealed = hashed.hexdigest, Gate(cast(str, sha256))
                seal = _Trailer(lambda: sealed.trailer(digest_of()))
                stream = cast(IO[bytes], _Concat([f, cast(IO[bytes], seal)]))
                total = size + sealed.trailer_size
                gate = sealed
            else:
                stream = f
                total = size
        else:
            # Empty the database first, inside the same transaction: afterwards it holds
            # exactly the backup, whether or not the dump drops what it recreates. COMMIT
            # comes last, and only if the file's digest is the sidecar's.
            begin = b"BEGIN;\n" + WIPE_DATABASE
            commit = b"\n;\n" + ROWS_RECEIVED.encode() + b"COMMIT;\n"
            refuse = b"\n;\n" + DIGEST_DIFFERS.encode() + b"\n"
            width = max(len(commit), len(refuse))  # the same length either way (stdin_size)

            def end() -> bytes:
                ok = hashed is None or hashed.hexdigest() == sha256
                return (commit if ok else refuse).ljust(width, b" ")

            stream = cast(
                IO[bytes], _Concat([io.BytesIO(begin), f, cast(IO[bytes], _Trailer(end))])
            )
            total = size + len(begin) + width
        received = _RowsReceived()
        try:
            runner.run(
                restore_command(database, fmt, gate=gate),
                stdin=stream,
                stdin_size=total,
                stdout=received,  # type: ignore[arg-type]
                progress=advance,
            )
            return received.counts()
        except ExecFailed as exc:
            if hashed is not None and hashed.hexdigest() != sha256:
                raise CorruptBackup(
                    f"{path}: sha256 differs from its sidecar (the file was altered); found as "
                    f"it streamed into {database!r}, whose transaction was rolled back: "
                    "nothing was changed",
                ) from exc
            detail = " ".join(exc.message.split())  # one line, whatever stderr held
            if server_went_away(detail):
                raise ServerKilled(
                    f"restore of {path.name} into {database!r} failed: a PostgreSQL process "
                    "was killed in the middle of it (the server's, or the restore client's "
                    "beside it), most likely out of memory (its container's memory limit); "
                    f"the transaction was rolled back, the backup itself is fine ({detail})",
                    database=database,
                ) from exc
            raise RestoreFailed(
                f"restore of {path.name} into {database!r} failed, nothing was changed: {detail}",
                database=database,
            ) from exc


# What libpq and the server say when the backend dies under a client: killed (SIGKILL, as
# the kernel's OOM killer does), or ended by the postmaster's crash recovery.
_SERVER_WENT_AWAY = (
    "server closed the connection unexpectedly",
    "terminating connection because of crash of another server process",
    "connection to server was lost",
    "the database system is in recovery mode",
    "no connection to the server",
)


def server_went_away(message: str) -> bool:
    """The restore failed because a process died (the server's, or a client's killed in the
    same container: the shell reports it as "Killed"), not because of the dump."""
    lowered = message.lower()
    if any(marker in lowered for marker in _SERVER_WENT_AWAY):
        return True
    return re.search(r"(^|[\s:])Killed($|\s)|exited with 137\b", message) is not None


def cross_database_check(
    dump_database: str | None, target: str, named_source: str | None
) -> str | None:
    """Refuse to restore a backup of one database into another unless its source is named
    (pure). Returns the plan's warning when it is (None: no crossing); ``--yes`` alone never
    crosses."""
    if named_source is not None and dump_database and named_source != dump_database:
        raise WrongDatabase(
            f"the backup is of database {dump_database!r}, not {named_source!r} "
            "as --from-database says; nothing was changed",
            hint=f"Check the file; to restore it into {target!r}, name its real source: "
            f"--from-database {dump_database}",
        )
    if not dump_database or dump_database == target:
        return None
    if named_source is None:
        raise WrongDatabase(
            f"the backup is of database {dump_database!r}, but the restore would replace "
            f"{target!r}; nothing was changed",
            hint=f"To put {dump_database!r}'s data into {target!r}, say so: --from-database "
            f"{dump_database} (or --database {dump_database} to restore it where it came from).",
        )
    return (
        f"a backup of {dump_database!r} replaces everything in {target!r} "
        "(another database than it came from)"
    )


def restore_backup(
    path: Path,
    source: Source,
    *,
    full_reader: CommandRunner | None,
    backups_dir: Path,
    safety_backup: bool = True,
    compression: int = 0,
    require_sidecar: bool = True,
    progress: ProgressFactory = no_progress,
    verified: Verification | None = None,
    identities: Sequence[agecrypt.Identity] | None = None,
    recipients: Sequence[str] = (),
) -> RestoreReport:
    """Verify ``path``, take a safety backup, then restore it in one transaction.

    ``verified``: a check of this file made before (while the user read the plan); it
    stands if the file has not changed since, else the file is checked again.
    An encrypted file needs ``identities``: the check opens it before the database is
    touched (in full when no sidecar of backup.now vouches for it), then it is decrypted
    while it streams into the pod; a chunk failing age's authentication there ends the
    stream, and the transaction is never committed. ``recipients``: the safety backup is
    encrypted to them.
    """
    verification = verified
    if verification is None or verification.path != path or not verification.still_valid():
        verification = verify_backup(
            path,
            full_reader=full_reader,
            progress=progress,
            require_sidecar=require_sidecar,
            identities=identities,
            decrypt_all=False,
            stream_digest=True,
        )
    if verification.encrypted and (identities is None or verification.plain_size is None):
        raise BackupKeyError(f"{path.name} is encrypted: restoring it needs your identity")
    safety = None
    if safety_backup:
        safety, _ = take_backup(
            source,
            backups_dir=backups_dir,
            compression=compression,
            progress=progress,
            recipients=recipients,
        )
    try:
        received = _restore_stream(
            source.runner,
            path,
            source.database,
            verification.header.format,
            progress,
            decrypt=verification if verification.encrypted else None,
            identities=identities or (),
            sha256=verification.info.sha256 if verification.info is not None else None,
        )
    except KeyboardInterrupt as exc:
        kept = f"; the safety backup taken before is {safety}" if safety else ""
        raise RestoreInterrupted(
            f"restore of {path.name} into {source.database!r} interrupted: the transaction "
            f"was not committed, the database is as it was{kept}",
            database=source.database,
            safety_backup=str(safety) if safety else None,
        ) from exc
    except (RestoreFailed, CorruptBackup) as exc:
        if safety is not None:
            exc.message += f"; the safety backup taken before is {safety}"
            exc.args = (exc.message,)
            exc.context["safety_backup"] = str(safety)
        raise
    return RestoreReport(
        file=path,
        database=source.database,
        tables=received or row_counts(source.runner, source.database),
        safety_backup=safety,
    )
