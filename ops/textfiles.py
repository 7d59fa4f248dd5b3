"""The one reader of text files a user writes: secret files, ``.env``, templates.

Windows editors save text in more than one way, and all of them must give the same value:

* Notepad's "UTF-8" (since Windows 10 1903 without, before with a byte order mark),
  "UTF-8 with BOM", "Unicode" (UTF-16 LE with BOM) and "Unicode big endian";
* CRLF line endings (Notepad, git's autocrlf), LF, or a lone CR (old Mac editors).

So: a BOM selects UTF-8 / UTF-16 LE / UTF-16 BE and is dropped; without one the bytes
must be UTF-8. A NUL is refused (it is never part of a value, and is what UTF-16 saved
without a BOM looks like). A single-value file loses exactly one trailing line ending
and nothing else; a line break left inside the value is refused, naming the file.

Python's ``utf-8-sig`` and ``utf-16`` codecs do the decoding; only the choice between
them (by BOM) is ours, because no codec both strips a UTF-8 BOM and honours a UTF-16 one.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from ops.errors import FileError

# Longest first: a UTF-32 LE BOM starts with the UTF-16 LE one (we do not read UTF-32).
_BOMS: tuple[tuple[bytes, str, str], ...] = (
    (codecs.BOM_UTF8, "utf-8", "UTF-8 with BOM"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
)
LINE_ENDINGS = ("\r\n", "\n", "\r")
SAVE_AS = "Save it as UTF-8 (Notepad: File > Save as > Encoding: UTF-8)."


def encoding_of(data: bytes) -> tuple[str, int, str]:
    """(codec, BOM length, what to call it) for the bytes of a text file."""
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            return codec, len(bom), label
    return "utf-8", 0, "UTF-8"


def decode(data: bytes, *, name: str) -> str:
    """The text of a file's bytes (see the module docstring); FileError names ``name``."""
    codec, skip, label = encoding_of(data)
    try:
        text = data[skip:].decode(codec)
    except UnicodeDecodeError as exc:
        if skip == 0 and _looks_like_utf16(data):
            raise _utf16_without_bom(name) from exc
        raise FileError(
            f"{name} is not {label} text (byte {exc.start} cannot be decoded; "
            "saved as ANSI / Windows-1252?)",
            hint=SAVE_AS,
        ) from exc
    if "\x00" in text:
        if skip == 0 and _looks_like_utf16(data):
            raise _utf16_without_bom(name)
        raise FileError(f"{name} contains a NUL character", hint=SAVE_AS)
    return text


def read_text(path: Path) -> str:
    """A whole text file, decoded; FileError if it cannot be read or decoded."""
    return decode(read_bytes(path), name=str(path))


def read_value(path: Path) -> str:
    """A file holding one value: its text without the one trailing line ending.

    FileNotFoundError passes through (a missing file may be optional for the caller).
    """
    return single_value(read_text(path), name=str(path))


def single_value(text: str, *, name: str) -> str:
    """``text`` without one trailing CRLF, LF or CR; a line break left inside is refused."""
    for ending in LINE_ENDINGS:
        if text.endswith(ending):
            text = text[: -len(ending)]
            break
    if "\n" in text or "\r" in text:
        raise FileError(
            f"{name} holds more than one line",
            hint="Keep the value on one line, with no blank line after it.",
        )
    return text


def read_bytes(path: Path) -> bytes:
    """A file's bytes; every OSError but a missing file becomes one FileError line."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except IsADirectoryError as exc:
        raise FileError(f"{path} is a folder, not a file", hint="Name a file.") from exc
    except OSError as exc:
        raise FileError(
            f"cannot read {path}: {exc.strerror or exc}", hint="Check the file's permissions."
        ) from exc


def _utf16_without_bom(name: str) -> FileError:
    return FileError(f"{name} looks like UTF-16 without a byte order mark", hint=SAVE_AS)


def _looks_like_utf16(data: bytes) -> bool:
    """Mostly-ASCII UTF-16 without a BOM: every other byte is NUL."""
    sample = data[:200]
    quarter = len(sample) // 4
    return len(sample) >= 2 and (sample[1::2].count(0) > quarter or sample[0::2].count(0) > quarter)
