"""The old scripts' backups: ``inv backup.import`` and the errors of verify/restore/to-daemon.

The dumps are kept here as bytes. ``POWERSHELL51`` is what Windows PowerShell 5.1's
``kubectl exec ... pg_dump > backup.sql`` leaves on a German Windows: pg_dump's UTF-8
decoded with the console's code page 850, split into lines, written as UTF-16 LE with a BOM
and CRLF. (Made by ``tests.support.windows.powershell51_redirect``, which follows that documented
behaviour; no Windows machine runs here. The test pins the two to each other.)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ops.backups.files import BackupInfo, sha256_of, sidecar_of, verify_backup
from ops.backups.legacy import import_backup, plan_import
from ops.errors import CorruptBackup
from tests.support.inv import clean_env
from tests.support.inv import run_inv as inv
from tests.support.windows import powershell51_redirect

ROOT = Path(__file__).resolve().parents[2]

# pg_dump's own output: UTF-8, LF; COPY rows with ü Ä ß €, an escaped tab, backslash and
# newline (pg_dump writes them as \t, \\ and \n).
ORIGINAL = (
    b"--\n-- PostgreSQL database dump\n--\n\n"
    b"-- Dumped from database version 15.18\n-- Dumped by pg_dump version 15.18\n\n"
    b"SET client_encoding = 'UTF8';\n\n"
    b"CREATE TABLE public.student (\n    id integer NOT NULL,\n    name text NOT NULL\n);\n\n"
    b"COPY public.student (id, name) FROM stdin;\n"
    b"1\tM\xc3\xbcller \xc3\x84\xc3\x9f \xe2\x82\xac\n"
    b"2\ttab\\there\\\\back\\nnew line\n"
    b"\\.\n\n\n"
    b"--\n-- PostgreSQL database dump complete\n--\n\n"
)
# The same dump after Windows PowerShell 5.1's `>` (code page 850 → UTF-16 LE BOM, CRLF).
POWERSHELL51 = bytes.fromhex(
    "fffe2d002d000d000a002d002d00200050006f0073007400670072006500530051004c002000640061007400"
    "610062006100730065002000640075006d0070000d000a002d002d000d000a000d000a002d002d0020004400"
    "75006d007000650064002000660072006f006d00200064006100740061006200610073006500200076006500"
    "7200730069006f006e002000310035002e00310038000d000a002d002d002000440075006d00700065006400"
    "2000620079002000700067005f00640075006d0070002000760065007200730069006f006e00200031003500"
    "2e00310038000d000a000d000a00530045005400200063006c00690065006e0074005f0065006e0063006f00"
    "640069006e00670020003d0020002700550054004600380027003b000d000a000d000a004300520045004100"
    "5400450020005400410042004c00450020007000750062006c00690063002e00730074007500640065006e00"
    "7400200028000d000a00200020002000200069006400200069006e007400650067006500720020004e004f00"
    "540020004e0055004c004c002c000d000a0020002000200020006e0061006d00650020007400650078007400"
    "20004e004f00540020004e0055004c004c000d000a0029003b000d000a000d000a0043004f00500059002000"
    "7000750062006c00690063002e00730074007500640065006e00740020002800690064002c0020006e006100"
    "6d00650029002000460052004f004d00200073007400640069006e003b000d000a00310009004d001c255d25"
    "6c006c006500720020001c25e4001c2592012000d400e900bc000d000a00320009007400610062005c007400"
    "68006500720065005c005c006200610063006b005c006e006e006500770020006c0069006e0065000d000a00"
    "5c002e000d000a000d000a000d000a002d002d000d000a002d002d00200050006f0073007400670072006500"
    "530051004c002000640061007400610062006100730065002000640075006d007000200063006f006d007000"
    "6c006500740065000d000a002d002d000d000a000d000a00"
)


def test_the_simulation_is_the_recorded_bytes() -> None:
    assert powershell51_redirect(ORIGINAL) == POWERSHELL51


WINDOWS_MADE = {
    "powershell51-utf16-cp850": POWERSHELL51,
    "powershell51-utf16-cp437": powershell51_redirect(ORIGINAL, "cp437"),
    "powershell7-utf8-cp850-crlf": re.sub(
        rb"\r?\n", b"\r\n", ORIGINAL.decode("cp850").encode("utf-8")
    ),
    "git-autocrlf-utf8-crlf": ORIGINAL.replace(b"\n", b"\r\n"),
    "utf16-of-correct-text": b"\xff\xfe"
    + ORIGINAL.decode().replace("\n", "\r\n").encode("utf-16-le"),
    "utf8-bom-lf": b"\xef\xbb\xbf" + ORIGINAL,
}


@pytest.mark.parametrize("saved", WINDOWS_MADE.values(), ids=WINDOWS_MADE.keys())
def test_import_gives_back_pg_dumps_bytes(saved: bytes, tmp_path: Path) -> None:
    old = tmp_path / "backup-20250203.sql"
    old.write_bytes(saved)
    result = import_backup(old, backups_dir=tmp_path / "backups")
    assert result.path.read_bytes() == ORIGINAL
    info = BackupInfo.read(sidecar_of(result.path))
    assert info.sha256 == sha256_of(result.path) and info.format == "plain"
    checked = verify_backup(result.path, full_reader=None)  # an ordinary checked backup now
    assert "sha256 matches the sidecar" in checked.checks


def test_the_plan_names_what_was_undone(tmp_path: Path) -> None:
    old = tmp_path / "b.sql"
    old.write_bytes(POWERSHELL51)
    assert plan_import(old).describe() == (
        "UTF-16 LE, CRLF line endings, non-ASCII text decoded by PowerShell with code page 850"
    )


def test_a_dump_cut_short_is_not_imported(tmp_path: Path) -> None:
    old = tmp_path / "b.sql"
    old.write_bytes(POWERSHELL51[: len(POWERSHELL51) // 2 * 2 - 120])
    with pytest.raises(CorruptBackup, match="cut short"):
        import_backup(old, backups_dir=tmp_path / "backups")
    assert not list((tmp_path / "backups").iterdir())


def test_a_custom_archive_through_powershell_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "b.dump"
    old.write_bytes(powershell51_redirect(b"PGDMP\x01\x0e\x00\x04\x08\x01\x00\n\x80\xff"))
    with pytest.raises(CorruptBackup, match="cannot be recovered"):
        plan_import(old)


def run_inv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(COLUMNS="200", KUBECONFIG=str(cwd / "no-kubeconfig"))
    (cwd / ".env").write_bytes(b"")
    return inv(*args, env=env, cwd=cwd, timeout=60)


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


COMMANDS = {
    "verify": ["backup.verify", "{file}"],
    "verify --no-sidecar": ["backup.verify", "{file}", "--no-sidecar"],
    "restore": ["backup.restore", "--file", "{file}", "--yes"],
    "to-daemon": ["backup.to-daemon", "--file", "{file}"],
}
CAUSES = {
    "powershell51": (POWERSHELL51, "UTF-16 LE (as Windows PowerShell 5.1's `>` writes it)"),
    "crlf": (ORIGINAL.replace(b"\n", b"\r\n"), "Windows line endings (CRLF"),
}


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
@pytest.mark.parametrize(("saved", "cause"), CAUSES.values(), ids=CAUSES.keys())
def test_an_old_dump_is_named_with_the_command_that_fixes_it(
    saved: bytes, cause: str, command: list[str], tmp_path: Path
) -> None:
    """Seen: "not a pg_dump custom archive or plain SQL dump", hinting the command just run."""
    old = tmp_path / "old.sql"
    old.write_bytes(saved)
    line = one_line(run_inv(*(a.format(file=old) for a in command), cwd=tmp_path), 3)
    assert cause in line and f"inv backup.import {old}" in line


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_folder_is_called_a_folder(command: list[str], tmp_path: Path) -> None:
    """Seen: a directory given as --file was reported as "does not exist"."""
    folder = tmp_path / "backups"
    folder.mkdir()
    line = one_line(run_inv(*(a.format(file=folder) for a in command), cwd=tmp_path), 3)
    assert f"{folder} is a folder, not a backup file" in line


def test_import_task(tmp_path: Path) -> None:
    old = tmp_path / "Backup 2025-02-03.sql"
    old.write_bytes(POWERSHELL51)
    result = run_inv("backup.import", str(old), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    made = tmp_path / "backups" / "Backup_2025-02-03-imported.sql"
    assert made.read_bytes() == ORIGINAL and sidecar_of(made).is_file()
    assert f"inv backup.restore --file {made.relative_to(tmp_path)}" in result.stdout


def test_import_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A 48 MiB PowerShell dump is converted with a few MiB of memory, not its size."""
    import tracemalloc

    row = "42\tM\u00fcller \u20ac \\t\\n\n".encode().decode("cp850")
    old = tmp_path / "big.sql"
    with old.open("wb") as f:
        f.write(powershell51_redirect(ORIGINAL.split(b"\\.")[0]))
        body = (row.replace("\n", "\r\n") * 20000).encode("utf-16-le")
        for _ in range(48 * 1024 * 1024 // len(body)):
            f.write(body)
        f.write(
            powershell51_redirect(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n")[2:]
        )
    tracemalloc.start()
    try:
        result = import_backup(old, backups_dir=tmp_path / "backups")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.info.size > 20 * 1024 * 1024
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1048576:.1f} MiB"
