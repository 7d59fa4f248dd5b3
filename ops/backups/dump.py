"""Taking a backup: pg_dump into a file that gets its name only once it is checked."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from ops import agecrypt
from ops.backups.commands import dump_command
from ops.backups.files import (
    AGE_SUFFIX,
    BackupInfo,
    HashingWriter,
    ProgressFactory,
    backup_name,
    no_progress,
    open_exclusive,
    private_dir,
    publish,
    sidecar_of,
)
from ops.errors import BackupError, CorruptBackup, DumpFailed, ExecFailed
from ops.execstream import CommandRunner
from ops.pgformat import (
    HEAD_BYTES,
    PLAIN_END,
    DumpFormat,
    DumpHeader,
    plain_is_complete,
    read_header,
)


@dataclass(frozen=True, kw_only=True)
class Source:
    """Where the database lives: a runner for its tools plus names for the sidecar."""

    runner: CommandRunner
    database: str
    context: str
    namespace: str
    pod: str


# --- backup ----------------------------------------------------------------------------


def take_backup(
    source: Source,
    *,
    backups_dir: Path,
    fmt: DumpFormat = "custom",
    compression: int = 0,
    progress: ProgressFactory = no_progress,
    opener: Callable[[Path], IO[bytes]] = open_exclusive,
    now: datetime | None = None,
    recipients: Sequence[str] = (),
) -> tuple[Path, BackupInfo]:
    """pg_dump into ``backups_dir/<db>-<context>-<time>.<ext>`` via a ``.part`` file.

    The file gets its name only after exit status 0, non-empty output and the right
    format; then the sidecar records its sha256. Any failure (Ctrl-C included) removes
    the ``.part``. With ``recipients`` the stream is age-encrypted on its way to the
    ``.part`` (``<name>.age``): no plaintext byte is ever written; the checks run on the
    plaintext as it passes, the sidecar's sha256 and size are the ciphertext's.
    """
    when = now or datetime.now(UTC)
    private_dir(backups_dir)
    name = backup_name(source.database, source.context, fmt, when)
    if recipients:
        name += AGE_SUFFIX
    part = backups_dir / f"{name}.{secrets.token_hex(4)}.part"
    try:
        with opener(part) as f:
            writer = HashingWriter(f)  # the file's bytes: ciphertext when encrypting
            plain = _PlainTap(writer)
            with (
                agecrypt.EncryptingWriter(writer, recipients)
                if recipients
                else contextlib.nullcontext(writer) as sink,
                progress(f"pg_dump {source.database}", None) as advance,
            ):
                plain.sink = sink
                try:
                    source.runner.run(
                        dump_command(source.database, fmt, compression),
                        stdout=plain,  # type: ignore[arg-type]
                        progress=advance,
                    )
                except ExecFailed as exc:
                    raise DumpFailed(
                        f"backup of {source.database!r} failed: {exc.message}",
                        database=source.database,
                    ) from exc
            f.flush()
            os.fsync(f.fileno())
        header = _check_dump_stream(
            plain.size,
            bytes(plain.head),
            fmt,
            source.database,
            lambda: PLAIN_END in plain.tail if recipients else plain_is_complete(part),
        )
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
            encryption="age" if recipients else "none",
            recipients=tuple(recipients),
        )
        final = publish(part, backups_dir, name)
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


class _PlainTap:
    """pg_dump's output on its way to ``sink``: counted, its first and last bytes kept."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.size = 0
        self.head = bytearray()
        self.tail = b""

    def write(self, data: bytes | memoryview) -> int:
        self.sink.write(data)
        self.size += len(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.tail = (self.tail + bytes(data[-512:]))[-512:]
        return len(data)


def _check_dump_stream(
    size: int,
    head: bytes,
    fmt: DumpFormat,
    database: str,
    plain_complete: Callable[[], bool],
) -> DumpHeader:
    if size == 0:
        raise DumpFailed("pg_dump exited 0 but wrote nothing; nothing was kept")
    try:
        header = read_header(head, name="the dump")
    except CorruptBackup as exc:
        raise DumpFailed(f"pg_dump's output is not a dump: {exc.message}") from exc
    if header.format != fmt:
        raise DumpFailed(f"asked pg_dump for {fmt} format, got {header.format}")
    if fmt == "custom" and header.database != database:
        raise DumpFailed(f"the dump is of database {header.database!r}, not {database!r}")
    if fmt == "plain" and not plain_complete():
        raise DumpFailed("the plain dump has no 'dump complete' trailer; nothing was kept")
    return header
