"""The old PowerShell scripts' backups, made into checked backups: ``inv backup.import``.

``backup-now.ps1`` ran ``kubectl exec ... pg_dump > file``. In Windows PowerShell 5.1, ``>``
does not copy bytes: it decodes the program's output with the console's code page
(``[Console]::OutputEncoding``, the OEM code page unless set: 850 in Western Europe, 437
in the US), splits it into lines, and writes each line with CRLF as UTF-16 LE with a BOM.
PowerShell 7 does the same with UTF-8 (no BOM) as the file's encoding. An editor or git's
autocrlf may leave a plain dump in UTF-8 with CRLF.

Undone here, in one streaming pass per step and fixed-size chunks (memory does not grow
with the file): the file's encoding (by BOM) → text; CRLF → LF (pg_dump writes LF only; a
real CR in the data is written as ``\\r`` in COPY rows, so no CRLF is pg_dump's own); and,
when every non-ASCII character maps back through code page 850 or 437 to valid UTF-8, that
code page (what PowerShell decoded pg_dump's UTF-8 with). A first pass decides; a second
writes ``backups/<name>.sql`` through a ``.part`` file, checks pg_dump's header and its
completion trailer on the result, and records the sidecar. The result is an ordinary
checked plain backup that ``verify``, ``restore`` and ``to-daemon`` take as it is.

Why an explicit import rather than converting inside restore and to-daemon: the file's
sha256 is recorded once, for the bytes that are restored; the backup daemon only ever
receives UTF-8 dumps its own script can restore; and the conversion (with the code page it
chose) is shown to the user once, before any database is touched.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ops.backups.files import (
    BackupInfo,
    HashingWriter,
    ProgressFactory,
    no_progress,
    open_exclusive,
    private_dir,
    publish,
    sidecar_of,
)
from ops.errors import BackupError, CorruptBackup
from ops.pgformat import CUSTOM_MAGIC, PLAIN_END, PLAIN_MAGIC, detect_encoding, read_header
from ops.plan import Plan, items

CHUNK = 1024 * 1024  # bytes read at a time
_OEM_PAGES = ("cp850", "cp437")  # PowerShell's console code pages, most likely first
_TAIL = 512  # the completion trailer is within the last bytes of a dump


@dataclass(frozen=True, kw_only=True)
class ImportPlan:
    """What an import will do with a file, decided by reading it once."""

    path: Path
    encoding: str  # codec of the file
    encoding_label: str  # "UTF-16 LE", "UTF-8", ...
    bom: int  # bytes of BOM to skip
    crlf: bool  # had CRLF line endings
    code_page: str | None  # the code page PowerShell decoded pg_dump's UTF-8 with, if any

    def describe(self) -> str:
        parts = [self.encoding_label, "CRLF line endings" if self.crlf else "LF line endings"]
        if self.code_page:
            parts.append(
                f"non-ASCII text decoded by PowerShell with code page {self.code_page[2:]}"
            )
        return ", ".join(parts)


@dataclass(frozen=True, kw_only=True)
class ImportResult:
    path: Path
    info: BackupInfo
    plan: ImportPlan


def _text_chunks(path: Path, codec: str, skip: int, progress: ProgressFactory) -> Iterator[str]:
    """The file's text in chunks, CRLF made LF (a CR ending a chunk waits for the next)."""
    decoder = codecs.getincrementaldecoder(codec)()
    size = path.stat().st_size
    pending = ""
    with path.open("rb") as f, progress(f"read {path.name}", size) as advance:
        f.seek(skip)
        advance(skip)
        while True:
            data = f.read(CHUNK)
            try:
                text = pending + decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                at = f.tell() - len(data) + exc.start
                raise CorruptBackup(
                    f"{path} is not {codec} text throughout (byte {at} cannot be decoded): "
                    "not a dump that PowerShell or an editor re-encoded",
                    hint="Use the original dump, or another backup (`inv backup.list`).",
                ) from exc
            advance(len(data))
            if data and text.endswith("\r"):
                text, pending = text[:-1], "\r"
            else:
                pending = ""
            if text:
                yield text.replace("\r\n", "\n")
            if not data:
                return


def plan_import(path: Path, *, progress: ProgressFactory = no_progress) -> ImportPlan:
    """Read the file once: its encoding, its line endings, and PowerShell's code page."""
    if path.is_dir():
        raise CorruptBackup(f"{path} is a folder, not a backup file", hint="Name the dump file.")
    if not path.is_file():
        raise CorruptBackup(f"{path} does not exist", hint="Check the path.")
    with path.open("rb") as f:
        head = f.read(64 * 1024)
    if head.startswith(CUSTOM_MAGIC):
        raise BackupError(
            f"{path} is a pg_dump custom archive: it needs no import",
            hint=f"Use it as it is: inv backup.verify {path} --no-sidecar",
        )
    codec, skip, label = detect_encoding(head)
    if codec == "utf-16-le" and head[skip:].startswith(CUSTOM_MAGIC.decode().encode(codec)):
        raise CorruptBackup(
            f"{path} is a custom archive re-encoded as text by PowerShell's `>`: its bytes "
            "are lost and cannot be recovered",
            hint="Use another backup; for new ones, `inv backup.now` writes the bytes as they are.",
        )
    crlf = False
    candidates = {page: codecs.getincrementaldecoder("utf-8")() for page in _OEM_PAGES}
    non_ascii = False
    seen_start = ""
    for chunk in _text_chunks_raw(path, codec, skip, progress):
        if len(seen_start) < 2 * len(PLAIN_MAGIC):  # CRLF: up to twice as many characters
            seen_start += chunk[: 2 * len(PLAIN_MAGIC)]
        crlf = crlf or "\r\n" in chunk
        if chunk.isascii():
            continue
        non_ascii = True
        for page in list(candidates):
            try:
                candidates[page].decode(chunk.replace("\r\n", "\n").encode(page))
            except (UnicodeEncodeError, UnicodeDecodeError):
                del candidates[page]
    if not seen_start.replace("\r\n", "\n").startswith(PLAIN_MAGIC.decode()):
        raise CorruptBackup(
            f"{path} is {label} text but not a pg_dump plain SQL dump "
            "(it does not start with pg_dump's header)",
            hint="Import only dumps made by pg_dump (the old backup-now.ps1 made them).",
        )
    code_page = None
    if non_ascii:
        for page, decoder in candidates.items():
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                continue
            code_page = page
            break
    return ImportPlan(
        path=path, encoding=codec, encoding_label=label, bom=skip, crlf=crlf, code_page=code_page
    )


def _text_chunks_raw(path: Path, codec: str, skip: int, progress: ProgressFactory) -> Iterator[str]:
    """Like ``_text_chunks`` but line endings as they are (the first pass looks at them)."""
    decoder = codecs.getincrementaldecoder(codec)()
    with path.open("rb") as f, progress(f"check {path.name}", path.stat().st_size) as advance:
        f.seek(skip)
        while data := f.read(CHUNK):
            advance(len(data))
            try:
                text = decoder.decode(data)
            except UnicodeDecodeError as exc:
                raise CorruptBackup(
                    f"{path} is not {codec} text throughout (byte "
                    f"{f.tell() - len(data) + exc.start} cannot be decoded)",
                    hint="Use the original dump, or another backup (`inv backup.list`).",
                ) from exc
            yield text
        try:
            rest = decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise CorruptBackup(f"{path} ends in the middle of a character: cut short") from exc
        if rest:
            yield rest


def import_backup(
    path: Path,
    *,
    backups_dir: Path,
    name: str | None = None,
    plan: ImportPlan | None = None,
    progress: ProgressFactory = no_progress,
    now: datetime | None = None,
) -> ImportResult:
    """Convert an old script's plain dump into ``backups_dir/<name>.sql`` with its sidecar.

    Nothing is kept unless the result starts with pg_dump's header and ends with its
    completion trailer (a dump cut short by a full disk or a closed window is refused).
    """
    plan = plan or plan_import(path, progress=progress)
    final_name = import_name(path, name)
    private_dir(backups_dir)
    part = backups_dir / f".{final_name}.import.part"
    tail = b""
    try:
        with open_exclusive(part) as out:
            writer = HashingWriter(out)
            for text in _text_chunks(path, plan.encoding, plan.bom, progress):
                data = text.encode(plan.code_page) if plan.code_page else text.encode("utf-8")
                writer.write(data)
                tail = (tail + data)[-_TAIL:]
        if not bytes(writer.head).startswith(PLAIN_MAGIC):
            raise CorruptBackup(f"{path} does not start with pg_dump's header after conversion")
        if PLAIN_END not in tail:
            raise CorruptBackup(
                f"{path} is cut short: it does not end with pg_dump's "
                "'dump complete' trailer; nothing was imported",
                hint="Use another backup (the old scripts kept several), or the original dump.",
            )
        header = read_header(bytes(writer.head), name=str(path))
        when = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        final = publish(part, backups_dir, final_name)
        info = BackupInfo(
            file=final.name,
            sha256=writer.digest.hexdigest(),
            size=writer.size,
            database="",  # a plain dump does not name its database
            format="plain",
            compression="none",
            server_version=header.server_version,
            source_context="imported",
            source_namespace="-",
            source_pod=f"{path.name} ({plan.describe()})",
            created=when,
        )
        info.write(sidecar_of(final))
        return ImportResult(path=final, info=info, plan=plan)
    except OSError as exc:
        raise BackupError(
            f"cannot write the import into {backups_dir}: {exc.strerror or exc}",
            hint="Free some disk space (or point --backups-dir elsewhere); nothing was kept.",
        ) from exc
    finally:
        part.unlink(missing_ok=True)


def import_name(path: Path, name: str | None = None) -> str:
    """The imported backup's file name: ``name``, checked, or ``<file's stem>-imported.sql``."""
    if name is None:
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem).strip("._") or "backup"
        return f"{stem}-imported.sql"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+\.sql", name) or name.startswith("."):
        raise BackupError(
            f"{name!r} is not a usable backup file name",
            hint="Pick one of letters, digits, '.', '_', '-' ending in .sql with --name.",
        )
    return name


@dataclass(frozen=True, kw_only=True)
class ImportWork:
    """What ``import_planned`` needs: the file as read once, and where its backup goes."""

    conversion: ImportPlan
    backups_dir: Path
    name: str


def import_plan(
    path: Path,
    *,
    backups_dir: Path,
    name: str | None = None,
    progress: ProgressFactory = no_progress,
) -> Plan[ImportWork]:
    """backup.import's plan: the file read once (what was undone), what it writes, the
    checks; a bad --name is refused here, before anything is written."""
    conversion = plan_import(path, progress=progress)
    final_name = import_name(path, name)
    return Plan(
        title="backup.import",
        items=items(
            ("read", f"{path} ({conversion.describe()})"),
            ("write", f"{backups_dir / final_name}: UTF-8 with LF, with a .json sidecar"),
            ("check", "pg_dump's header and its 'dump complete' trailer"),
        ),
        work=ImportWork(conversion=conversion, backups_dir=backups_dir, name=final_name),
    )


def import_planned(
    plan: Plan[ImportWork], *, progress: ProgressFactory = no_progress
) -> ImportResult:
    """Carry out backup.import's plan."""
    work = plan.work
    return import_backup(
        work.conversion.path,
        backups_dir=work.backups_dir,
        name=work.name,
        plan=work.conversion,
        progress=progress,
    )
