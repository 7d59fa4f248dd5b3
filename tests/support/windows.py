"""What Windows tools do to a program's output, for tests of files our users bring from there."""

from __future__ import annotations

import re


def powershell51_redirect(data: bytes, code_page: str = "cp850") -> bytes:
    """What `native.exe > file` does in Windows PowerShell 5.1: decode the program's output
    with [Console]::OutputEncoding (the OEM code page: 850 in Western Europe, 437 in the
    US), split it into lines (CR, LF or CRLF), and write every line followed by CRLF, as
    UTF-16 LE with a BOM (Out-File's default encoding, "Unicode")."""
    lines = re.split(r"\r\n|\n|\r", data.decode(code_page))
    if lines and lines[-1] == "":
        lines.pop()
    return b"\xff\xfe" + "".join(line + "\r\n" for line in lines).encode("utf-16-le")
