"""Settings: env beats mounted secret files; missing credentials refuse to start, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from student_api.core.config import ConfigError, load_settings

PASSWORD = "s3cr3t-Pa55-do-not-print"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DB_* variables; an empty secrets folder under tmp_path."""
    for name in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "app-secrets"
    folder.mkdir()
    monkeypatch.setenv("APP_SECRETS_DIR", str(folder))
    return folder


def test_files_are_read_and_stripped(clean_env: Path) -> None:
    (clean_env / "db_user").write_text("app_user\n")
    (clean_env / "db_password").write_text(PASSWORD + "\n")

    settings = load_settings()

    assert settings.db_user == "app_user"
    assert settings.db_password.get_secret_value() == PASSWORD
    assert (settings.db_host, settings.db_port, settings.db_name) == (
        "postgres-service",
        5432,
        "studentdb",
    )


def test_env_wins_over_files(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "db_user").write_text("from_file")
    (clean_env / "db_password").write_text("file-password")
    monkeypatch.setenv("DB_USER", "from_env")
    monkeypatch.setenv("DB_PASSWORD", PASSWORD)

    settings = load_settings()

    assert settings.db_user == "from_env"
    assert settings.db_password.get_secret_value() == PASSWORD


def test_kubernetes_secret_volume_layout_is_read(clean_env: Path) -> None:
    # A Secret volume holds symlinks: db_user -> ..data/db_user -> ..2026_11_26/db_user.
    stamped = clean_env / "..2026_11_26_06_00_00.1"
    stamped.mkdir()
    (stamped / "db_user").write_text("app_user")
    (stamped / "db_password").write_text(PASSWORD)
    (clean_env / "..data").symlink_to(stamped.name)
    for key in ("db_user", "db_password"):
        (clean_env / key).symlink_to(f"..data/{key}")

    settings = load_settings()

    assert settings.db_password.get_secret_value() == PASSWORD


@pytest.mark.parametrize(
    ("env", "files", "missing"),
    [
        pytest.param({}, {}, ["DB_USER", "DB_PASSWORD"], id="nothing-set"),
        pytest.param({"DB_USER": "u"}, {}, ["DB_PASSWORD"], id="no-password"),
        pytest.param({}, {"db_password": PASSWORD}, ["DB_USER"], id="no-user"),
        pytest.param({"DB_USER": "u", "DB_PASSWORD": ""}, {}, ["DB_PASSWORD"], id="empty-password"),
    ],
)
def test_missing_credentials_refuse_in_one_line(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    files: dict[str, str],
    missing: list[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key, value in files.items():
        (clean_env / key).write_text(value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("refusing to start")
    for name in missing:
        assert f"{name} is not set" in message
    assert str(clean_env) in message


def test_password_never_in_repr_or_url(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_USER", "app_user")
    monkeypatch.setenv("DB_PASSWORD", PASSWORD)

    settings = load_settings()

    for text in (
        repr(settings),
        str(settings),
        str(settings.database_url()),
        repr(settings.database_url()),
        settings.describe_database(),
    ):
        assert PASSWORD not in text


def test_cli_without_credentials_exits_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "APP_SECRETS_DIR": str(tmp_path)}

    result = subprocess.run(
        [sys.executable, "-m", "student_api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"student-api: refusing to start: DB_USER is not set (set the env variable or put it "
        f"in {tmp_path / 'db_user'}); DB_PASSWORD is not set (set the env variable or put it "
        f"in {tmp_path / 'db_password'})"
    ]
    assert "Traceback" not in result.stderr
