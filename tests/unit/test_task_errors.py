"""Tasks turn errors into one red line and a non-zero exit; a traceback only with --debug."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.inv import clean_env as without_settings
from tests.support.inv import run_inv as inv

ROOT = Path(__file__).resolve().parents[2]


def run_inv(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return inv(*args, env=env, cwd=cwd, timeout=60)


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = without_settings()
    env["COLUMNS"] = "200"
    return env


def test_bad_setting_is_one_line_and_exit_2(clean_env: dict[str, str], tmp_path: Path) -> None:
    result = run_inv("config", env={**clean_env, "MANIFEST_BACKUP_KEEP": "lots"}, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "backup_keep" in lines[0] and "MANIFEST_BACKUP_KEEP" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_debug_shows_the_traceback(clean_env: dict[str, str], tmp_path: Path) -> None:
    result = run_inv(
        "--debug", "config", env={**clean_env, "MANIFEST_BACKUP_KEEP": "lots"}, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "ConfigError" in result.stderr


def test_config_masks_the_password(clean_env: dict[str, str], tmp_path: Path) -> None:
    env = {**clean_env, "MANIFEST_REGISTRY_PASSWORD": "do-not-print-me"}
    result = run_inv("config", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "do-not-print-me" not in result.stdout + result.stderr
    assert "registry_password" in result.stdout and "environment" in result.stdout
