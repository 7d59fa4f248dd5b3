"""Local backup files: names, sidecars, hashing, publishing, retention, listing, checks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from ops import agecrypt
from ops.backups.commands import full_read_command
from ops.errors import BackupError, CorruptBackup
from ops.execstream import CommandRunner, Progress
from ops.pgformat import (
    HEAD_BYTES,
    PLAIN_END,
    DumpFormat,
    DumpHeader,
    plain_is_complete,
    read_file_header,
    read_header,
)

ProgressFactory = Callable[[str, int | None], AbstractContextManager[Progress]]
Where = Literal["local", "daemon"]
# A runner for the full read, or a function giving one (called only when a read is due).
FullReader = CommandRunner | Callable[[], CommandRunner | None] | None

SIDECAR_SUFFIX = ".json"
AGE_SUFFIX = ".age"  # an age-encrypted backup: <name>.dump.age, <name>.sql.age
EXTENSIONS: Mapping[DumpFormat, str] = {"custom": ".dump", "plain": ".sql"}


def no_progress(_description: str, _total: int | None) -> AbstractContextManager[Progress]:
    return contextlib.nullcontext(lambda _n: None)


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
    # "age": the file is age ciphertext (sha256 and size above are the ciphertext's), to
    # these public keys. Never an identity.
    encryption: str = "none"
    recipients: tuple[str, ...] = ()

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + f".{secrets.token_hex(4)}.tmp")
        try:
            with create_private(tmp) as f:
                f.write((json.dumps(asdict(self), indent=2) + "\n").encode("utf-8"))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def read(cls, path: Path) -> BackupInfo:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if "recipients" in raw:
                raw["recipients"] = tuple(raw["recipients"])
            # Sidecars from before a field existed: that field keeps its default.
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        except FileNotFoundError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptBackup(f"sidecar {path} is unreadable ({exc})") from exc


@dataclass(frozen=True, kw_only=True)
class Verification:
    """The outcome of ``verify_backup``: every check that ran, in order, and the file's
    header, so nothing after the check reads the file's format again."""

    path: Path
    header: DumpHeader
    checks: tuple[str, ...]
    info: BackupInfo | None
    stat: tuple[int, int] = (0, 0)  # size and mtime (ns) of the file that was checked
    encrypted: bool = False
    plain_size: int | None = None  # of an encrypted file, once decrypted (None: not opened)
    # The sidecar's sha256 is still to be checked: by the restore, as the file streams.
    digest_pending: bool = False

    @property
    def summary(self) -> str:
        """What the checks prove, and no more: without a sidecar, nothing about alteration."""
        if self.info is not None and self.digest_pending:
            return (
                f"a {self.header.format} dump of its sidecar's size (its sha256 is checked as "
                "it streams; nothing is committed unless it matches)"
            )
        if self.info is not None:
            return f"a complete, unaltered {self.header.format} dump (sha256 matches its sidecar)"
        return (
            f"complete and readable as a {self.header.format} dump; whether it was altered "
            "cannot be known without its sidecar"
        )

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


# --- files -----------------------------------------------------------------------------


def backup_name(database: str, context: str, fmt: DumpFormat, when: datetime) -> str:
    safe_context = re.sub(r"[^A-Za-z0-9_.-]", "_", context)
    return f"{database}-{safe_context}-{when:%Y%m%d-%H%M%S}{EXTENSIONS[fmt]}"


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


# Large reads into one reused buffer: hashlib lets go of the GIL while it hashes a chunk,
# so fewer, larger chunks leave the GIL to a thread working beside it (plan_restore).
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


# Backups hold every student's personal data: only their owner may read them.
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def create_private(path: Path) -> IO[bytes]:
    """A new file (never an existing one) that only its owner can read or write (0600).

    The mode is given to open(2) itself, so the file is never readable by others, not even
    for a moment; the umask can only take permissions away from 0600.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    return os.fdopen(fd, "wb")


def private_dir(path: Path) -> Path:
    """``path`` as a folder; created 0700 when it is missing (an existing one is left as the
    user made it)."""
    if not path.is_dir():
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # mkdir's mode is filtered by the umask
            path.chmod(PRIVATE_DIR)
    return path


def open_exclusive(path: Path) -> IO[bytes]:
    return create_private(path)


def publish(part: Path, directory: Path, name: str) -> Path:
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
        if p.is_file()
        and p.name.removesuffix(AGE_SUFFIX).endswith((".dump", ".sql"))
        and not p.name.startswith(".")
    ]


# --- verify ----------------------------------------------------------------------------


def verify_backup(
    path: Path,
    *,
    full_reader: FullReader,
    progress: ProgressFactory = no_progress,
    require_sidecar: bool = True,
    identities: Sequence[agecrypt.Identity] | None = None,
    decrypt_all: bool = True,
    stream_digest: bool = False,
) -> Verification:
    """Check a local backup: sidecar sha256 and size, format, and a full read.

    ``stream_digest`` (a restore): the sidecar's size is checked here, its sha256 is left
    to the restore, which hashes the file as it streams it and commits only if it matches
    (``digest_pending``): one pass over the file instead of two.

    ``full_reader`` runs ``pg_restore`` for the full read of a custom dump (None: skip it,
    and say so in the checks); a function is called for the runner only for a custom dump.
    Raises CorruptBackup on the first failed check. An age-encrypted file is checked
    against its sidecar as it is (ciphertext); with ``identities`` it is also decrypted
    (age authenticates every chunk) and its dump checked like a plain file's, never
    written to disk. ``decrypt_all=False`` (a restore, which decrypts it again while
    streaming): when the sidecar that ``backup.now`` wrote matches, only the first chunk is
    opened (the identity fits, the dump's header); the sha256 already proves the rest.
    """
    if path.is_dir():
        raise CorruptBackup(f"{path} is a folder, not a backup file", hint="Name a backup file.")
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
            read_file_header(path)  # a foreign or re-encoded file: say so, not "no sidecar"
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
        if stream_digest:
            checks.append(
                "size matches the sidecar; its sha256 is checked as the file streams "
                "(nothing is committed unless it matches)"
            )
        else:
            with progress(f"sha256 {path.name}", size) as advance:
                digest = sha256_of(path, advance)
            if digest != info.sha256:
                raise CorruptBackup(
                    f"{path}: sha256 differs from its sidecar (the file was altered)"
                )
            checks.append("sha256 matches the sidecar")
    pending = stream_digest and info is not None
    if agecrypt.file_is_encrypted(path):
        return _verify_encrypted(
            path,
            info,
            checks,
            stat,
            full_reader=full_reader,
            identities=identities,
            progress=progress,
            decrypt_all=decrypt_all,
            digest_pending=pending,
        )
    header = read_file_header(path)
    _check_format(path, header, info, checks)
    if header.format == "plain":
        if not plain_is_complete(path):
            raise CorruptBackup(f"{path} is cut short: no 'dump complete' trailer")
        checks.append("plain dump ends with pg_dump's trailer")
    elif (reader := _reader(full_reader)) is not None:
        checks.append(_full_read(path, reader, size, progress))
    elif info is not None:
        checks.append("full read skipped (the sha256 is that of pg_dump's complete output)")
    else:
        checks.append("full read skipped (no pg_restore to read it with)")
    return Verification(
        path=path,
        header=header,
        checks=tuple(checks),
        info=info,
        stat=stat,
        digest_pending=pending,
    )


def _check_format(
    path: Path, header: DumpHeader, info: BackupInfo | None, checks: list[str]
) -> None:
    """The dump's format as its header says, and the sidecar's agreeing with it."""
    checks.append(
        f"{header.format} format"
        + (f", archive {header.archive_version}" if header.archive_version else "")
    )
    if info is not None and info.format != header.format:
        raise CorruptBackup(f"{path} is {header.format}, its sidecar says {info.format}")


def _reader(full_reader: FullReader) -> CommandRunner | None:
    return full_reader() if callable(full_reader) else full_reader


def _full_read(
    path: Path,
    reader: CommandRunner,
    size: int,
    progress: ProgressFactory,
    *,
    identities: Sequence[agecrypt.Identity] | None = None,
) -> str:
    """pg_restore reads a custom dump of ``size`` bytes to its end (decrypted on the way
    with ``identities``), or CorruptBackup says why it did not."""
    with contextlib.ExitStack() as stack:
        stdin: IO[bytes] = stack.enter_context(path.open("rb"))
        if identities is not None:
            stdin = stack.enter_context(
                agecrypt.DecryptingReader(stdin, identities, name=str(path))  # type: ignore[arg-type]
            )
        advance = stack.enter_context(progress(f"full read {path.name}", size))
        result = reader.run(
            full_read_command(), stdin=stdin, stdin_size=size, check=False, progress=advance
        )
    if result.returncode != 0:
        raise CorruptBackup(
            f"{path} does not read to the end: {result.stderr or 'pg_restore failed'}"
        )
    return f"full read by pg_restore ({reader.where})"


def format_from_name(path: Path) -> DumpFormat:
    """The dump format an (encrypted) file's name says: ``x.dump[.age]`` or ``x.sql[.age]``."""
    name = path.name.removesuffix(AGE_SUFFIX)
    return "plain" if name.endswith(".sql") else "custom"


class _Counting:
    """A read-only file that reports the bytes read from it as progress."""

    def __init__(self, f: IO[bytes], advance: Progress) -> None:
        self.f, self.advance = f, advance

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.advance(len(data))
        return data


def _verify_encrypted(
    path: Path,
    info: BackupInfo | None,
    checks: list[str],
    stat: tuple[int, int],
    *,
    full_reader: FullReader,
    identities: Sequence[agecrypt.Identity] | None,
    progress: ProgressFactory,
    decrypt_all: bool = True,
    digest_pending: bool = False,
) -> Verification:
    def verified(header: DumpHeader, plain_size: int | None = None) -> Verification:
        return Verification(
            path=path,
            header=header,
            checks=tuple(checks),
            info=info,
            stat=stat,
            encrypted=True,
            plain_size=plain_size,
            digest_pending=digest_pending,
        )

    recipients = info.recipients if info is not None else ()
    to = f" to {len(recipients)} recipient(s)" if recipients else ""
    checks.append(f"age-encrypted{to}")
    if identities is None:
        fmt = info.format if info is not None else format_from_name(path)
        checks.append(
            "contents not opened: no identity (MANIFEST_BACKUP_IDENTITY_FILE or "
            "secrets/backup_identity.txt opens and checks them)"
        )
        return verified(DumpHeader(format=fmt))
    if not decrypt_all and info is not None and info.recipients:
        # The sidecar backup.now wrote after every check passed; its sha256 matches (or
        # is checked as the file streams, digest_pending).
        opened = agecrypt.open_head(path, identities, recipients=recipients, head=HEAD_BYTES)
        header = read_header(opened.head, name=f"{path} (decrypted)")
        if info.format != header.format:
            raise CorruptBackup(f"{path} is {header.format}, its sidecar says {info.format}")
        checks.append("your identity opens it (age); the rest is authenticated as it streams")
        return verified(header, opened.plain_size)
    with path.open("rb") as f, progress(f"decrypt {path.name}", stat[0]) as advance:
        checked = agecrypt.check_stream(
            _Counting(f, advance),  # type: ignore[arg-type]
            identities,
            name=str(path),
            recipients=recipients,
            head=HEAD_BYTES,
            tail=512,
        )
    checks.append("decrypts, every chunk authenticated (age)")
    header = read_header(checked.head, name=f"{path} (decrypted)")
    _check_format(path, header, info, checks)
    if header.format == "plain":
        if PLAIN_END not in checked.tail:
            raise CorruptBackup(f"{path} is cut short: no 'dump complete' trailer")
        checks.append("plain dump ends with pg_dump's trailer")
    elif (reader := _reader(full_reader)) is not None:
        checks.append(_full_read(path, reader, checked.plain_size, progress, identities=identities))
    return verified(header, checked.plain_size)


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
                format=(info.format if info else format_from_name(path))
                + (", age" if path.name.endswith(AGE_SUFFIX) else ""),
                verified=verified,
            )
        )
    return found
