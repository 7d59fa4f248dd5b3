"""What a dump file is, from its bytes: pg_dump's custom archive header or a plain SQL dump.

Read without PostgreSQL tools, so a file can be checked (and a foreign one rejected) before
anything touches a database. The custom header layout is pg_dump's ``WriteHead`` in
``pg_backup_archiver.c``: magic ``PGDMP``, version bytes, int/offset sizes, format, the
compression, the creation time, then the database name and both version strings.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ops.errors import CorruptBackup

DumpFormat = Literal["custom", "plain"]
CUSTOM_MAGIC = b"PGDMP"
PLAIN_MAGIC = b"--\n-- PostgreSQL database dump\n--\n"
PLAIN_END = b"-- PostgreSQL database dump complete"
HEAD_BYTES = 64 * 1024
_ARCH_CUSTOM = 1
_BOMS = (
    (codecs.BOM_UTF8, "utf-8", "UTF-8 with BOM"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
_ARCH_NAMES = {0: "unknown", 1: "custom", 3: "tar", 4: "null", 5: "directory"}


@dataclass(frozen=True, kw_only=True)
class DumpHeader:
    """What the first bytes of a dump say about it."""

    format: DumpFormat
    archive_version: str = ""  # custom only, e.g. "1.14"
    compression: str = ""  # custom only: "none", "gzip:6", "lz4", ...
    database: str = ""  # custom only (plain dumps do not name their database)
    server_version: str = ""
    pg_dump_version: str = ""


def read_header(head: bytes, *, name: str = "the file") -> DumpHeader:
    """Parse the first bytes (``HEAD_BYTES`` are plenty) of a dump; CorruptBackup if foreign."""
    if head.startswith(CUSTOM_MAGIC):
        return _read_custom(head, name)
    if head.startswith(PLAIN_MAGIC):
        return _read_plain(head)
    if head[:2] == b"\x1f\x8b":
        what = "a gzip file (a compressed plain dump? unpack it first)"
    elif len(head) >= 262 and head[257:262] == b"ustar":
        what = "a tar archive (pg_dump -Ft is not supported; use custom or plain)"
    elif not head:
        what = "empty"
    else:
        reason = foreign_dump_reason(head, name)
        if reason is not None:
            raise CorruptBackup(
                reason, hint="It converts the file while reading it and checks it is complete."
            )
        what = "not a pg_dump custom archive or plain SQL dump"
    raise CorruptBackup(f"{name} is {what}")


def detect_encoding(head: bytes) -> tuple[str, int, str]:
    """(codec, BOM length, label) of a dump's first bytes."""
    for bom, codec, label in _BOMS:
        if head.startswith(bom):
            return codec, len(bom), label
    return "utf-8", 0, "UTF-8"


def foreign_dump_reason(head: bytes, name: str) -> str | None:
    """Why a file is a plain dump we cannot take as it is (and ``backup.import`` can), or None.

    For the error of ``verify``, ``restore`` and ``to-daemon``: it names the real cause.
    """
    codec, skip, label = detect_encoding(head)
    try:
        text = codecs.getincrementaldecoder(codec)().decode(head[skip : skip + 4096])
    except UnicodeDecodeError:
        return None
    if not text.replace("\r\n", "\n").startswith(PLAIN_MAGIC.decode()):
        return None
    if codec.startswith("utf-16"):
        return (
            f"{name} is a plain dump in {label} (as Windows PowerShell 5.1's `>` writes it); "
            f"make it a checked backup first: inv backup.import {name}"
        )
    if skip:
        return f"{name} is a plain dump with a UTF-8 BOM; make it a checked backup first: " + (
            f"inv backup.import {name}"
        )
    return (
        f"{name} is a plain dump with Windows line endings (CRLF: PowerShell, an editor or "
        f"git's autocrlf); make it a checked backup first: inv backup.import {name}"
    )


def read_file_header(path: Path) -> DumpHeader:
    with path.open("rb") as f:
        return read_header(f.read(HEAD_BYTES), name=str(path))


def plain_is_complete(path: Path) -> bool:
    """A plain dump ends with pg_dump's "dump complete" comment (newer ones add one line)."""
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 512))
        return PLAIN_END in f.read()


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.pos, self.name = data, 0, name
        self.int_size = 4

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise CorruptBackup(f"{self.name}: the archive header is cut short")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def integer(self) -> int:
        negative = self.byte()
        value = 0
        for shift in range(self.int_size):
            value |= self.byte() << (8 * shift)
        return -value if negative else value

    def string(self) -> str:
        length = self.integer()
        if length < 0:
            return ""
        if self.pos + length > len(self.data):
            raise CorruptBackup(f"{self.name}: the archive header is cut short")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return value.decode("utf-8", errors="replace")


def _read_custom(head: bytes, name: str) -> DumpHeader:
    r = _Reader(head, name)
    r.pos = len(CUSTOM_MAGIC)
    major, minor, rev = r.byte(), r.byte(), r.byte()
    version = (major, minor)
    r.int_size = r.byte()
    r.byte()  # offset size
    if r.int_size not in (4, 8) or major != 1 or minor < 12:
        raise CorruptBackup(f"{name}: unsupported archive version {major}.{minor}.{rev}")
    archive_format = r.byte()
    if archive_format != _ARCH_CUSTOM:
        kind = _ARCH_NAMES.get(archive_format, str(archive_format))
        raise CorruptBackup(f"{name} is a pg_dump {kind} archive, not a custom one")
    if version >= (1, 15):
        algorithm = r.byte()
        compression = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}.get(algorithm, str(algorithm))
    else:
        level = r.integer()
        compression = "none" if level == 0 else f"gzip:{level if level > 0 else 'default'}"
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        r.integer()
    database = r.string()
    server_version = r.string()
    pg_dump_version = r.string()
    return DumpHeader(
        format="custom",
        archive_version=f"{major}.{minor}",
        compression=compression,
        database=database,
        server_version=server_version,
        pg_dump_version=pg_dump_version,
    )


def _read_plain(head: bytes) -> DumpHeader:
    server = dump = ""
    for line in head.split(b"\n")[:30]:
        text = line.decode("utf-8", errors="replace")
        if text.startswith("-- Dumped from database version "):
            server = text.removeprefix("-- Dumped from database version ").strip()
        elif text.startswith("-- Dumped by pg_dump version "):
            dump = text.removeprefix("-- Dumped by pg_dump version ").strip()
    return DumpHeader(format="plain", server_version=server, pg_dump_version=dump)


def read_head(stream: BinaryIO) -> bytes:
    return stream.read(HEAD_BYTES)


def plain_drops_first(path: Path) -> bool:
    """Whether a plain dump was made with ``--clean`` (DROPs come before the first CREATE)."""
    with path.open("rb") as f:
        for line in f:
            # --clean --if-exists starts with "DROP ..." or "ALTER TABLE ... DROP CONSTRAINT"
            if line.startswith(b"DROP ") or (line.startswith(b"ALTER ") and b" DROP " in line):
                return True
            if line.startswith((b"CREATE ", b"COPY ", b"INSERT ")):
                return False
    return False
