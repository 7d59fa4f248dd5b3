"""Piped output (CI logs, `| findstr`) never cuts what a user copies: names, paths, values."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.inv import clean_env, run_inv

ROOT = Path(__file__).resolve().parents[2]


def run_piped(*args: str, cwd: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    """`inv` with stdout and stderr pipes, as narrow as rich's 80-column default."""
    env = clean_env()
    env.pop("COLUMNS", None)
    env.update(environ)
    (cwd / ".env").write_bytes(b"")
    return run_inv(*args, env=env, cwd=cwd, timeout=60)


def test_backup_list_keeps_whole_names(tmp_path: Path) -> None:
    """Seen: `inv backup.list | findstr` showed `Student-DB-manif…`, useless for --from-daemon."""
    backups = tmp_path / "backups"
    backups.mkdir()
    name = "Student-DB-manifest-lab-with-a-long-context-name-20261130-101010.dump"
    (backups / name).write_bytes(b"PGDMP")
    result = run_piped("backup.list", "--local-only", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:1] == [name] for line in result.stdout.splitlines()), result.stdout
    assert "…" not in result.stdout


def test_config_keeps_whole_values(tmp_path: Path) -> None:
    """Seen: `inv config` cut values at 80 columns when piped."""
    long_path = str(tmp_path / ("a-very-long-folder-name-" * 5) / "backups")
    result = run_piped("config", cwd=tmp_path, MANIFEST_BACKUPS_DIR=long_path)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["backups_dir", long_path, "environment", "MANIFEST_BACKUPS_DIR"] in rows
    assert "…" not in result.stdout
