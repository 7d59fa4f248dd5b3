"""Settings: precedence, sources, conversion, validation, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.config import MASK, Settings, describe, load_settings
from ops.errors import ConfigError


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_are_the_seed_names(workdir: Path) -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.image == "localhost:30002/studenten/manifest-app"
    assert settings.namespace == "development"
    assert settings.deployment == "manifest-app"
    assert settings.postgres_pod == "postgres-0"
    assert settings.database == "studentdb"
    assert settings.allowed_contexts == ("docker-desktop", "manifest-lab")
    assert all(row.source == "default" for row in describe(settings))


def test_precedence_default_dotenv_environment_flag(workdir: Path) -> None:
    (workdir / ".env").write_text(
        "MANIFEST_NAMESPACE=from-dotenv\nMANIFEST_DEPLOYMENT=dotenv-app\n"
    )
    environ = {"MANIFEST_NAMESPACE": "from-env", "MANIFEST_DATABASE": "envdb"}

    settings = load_settings({"database": "flagdb", "context": None}, environ=environ)

    assert (settings.namespace, settings.source_of("namespace")) == ("from-env", "environment")
    assert (settings.deployment, settings.source_of("deployment")) == ("dotenv-app", ".env")
    assert (settings.database, settings.source_of("database")) == ("flagdb", "flag")
    assert (settings.context, settings.source_of("context")) == ("", "default")


def test_env_file_path_can_be_overridden(workdir: Path) -> None:
    other = workdir / "staging.env"
    other.write_text("MANIFEST_NAMESPACE=staging\n")
    settings = load_settings(environ={"MANIFEST_ENV_FILE": str(other)})
    assert settings.namespace == "staging"


def test_named_env_file_that_does_not_exist_is_an_error(workdir: Path) -> None:
    with pytest.raises(ConfigError, match=r"settings file .*missing\.env does not exist"):
        load_settings(environ={"MANIFEST_ENV_FILE": "missing.env"})


def test_credentials_come_from_secret_files_below_dotenv(workdir: Path) -> None:
    secrets = workdir / "secrets"
    secrets.mkdir()
    (secrets / "registry_username.txt").write_text("robot\n")
    (secrets / "registry_password.txt").write_text("s3cr3t-value\r\n")

    from_files = load_settings(environ={})
    assert from_files.registry_username == "robot"
    assert from_files.registry_password == "s3cr3t-value"
    assert from_files.source_of("registry_password") == "secrets/"

    from_env = load_settings(environ={"MANIFEST_REGISTRY_PASSWORD": "env-pass"})
    assert from_env.registry_password == "env-pass"
    assert from_env.source_of("registry_password") == "environment"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        pytest.param("MANIFEST_BACKUP_KEEP", "ten", "expected a whole number", id="int"),
        pytest.param("MANIFEST_BACKUP_KEEP", "0", "at least 1", id="keep-zero"),
        pytest.param("MANIFEST_ROLLOUT_TIMEOUT", "-5", "above 0", id="timeout"),
        pytest.param("MANIFEST_NAMESPACE", "Dev_NS", "DNS label", id="namespace"),
        pytest.param("MANIFEST_REGISTRY", "http://x/", "host[:port]", id="registry"),
        pytest.param("MANIFEST_BACKUP_FORMAT", "tar", "one of: custom, plain", id="format"),
        pytest.param("MANIFEST_REGISTRY_CA_FILE", "/nope/ca.crt", "does not exist", id="ca"),
    ],
)
def test_invalid_values_name_setting_source_and_fix(
    workdir: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value})
    error = caught.value
    assert message in str(error)
    setting = variable.removeprefix("MANIFEST_").lower()
    assert setting in str(error)
    assert "environment" in str(error)
    assert error.hint


def test_invalid_flag_names_the_flag(workdir: Path) -> None:
    with pytest.raises(ConfigError, match=r"from --backup-keep"):
        load_settings({"backup_keep": "many"}, environ={})


def test_unknown_flag_is_rejected(workdir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({"colour": "blue"}, environ={})


def test_invalid_password_is_never_echoed(workdir: Path) -> None:
    settings = load_settings(environ={"MANIFEST_REGISTRY_PASSWORD": "hunter2-secret"})
    shown = {row.name: row.value for row in describe(settings)}
    assert shown["registry_password"] == MASK
    assert "hunter2-secret" not in repr(describe(settings))


def test_lists_and_paths_are_converted(workdir: Path) -> None:
    settings = load_settings(
        environ={
            "MANIFEST_ALLOWED_CONTEXTS": "kind-a, kind-b,,",
            "MANIFEST_BACKUPS_DIR": "/var/backups/x",
            "MANIFEST_KUBECONFIG": "",
        }
    )
    assert settings.allowed_contexts == ("kind-a", "kind-b")
    assert settings.backups_dir == Path("/var/backups/x")
    assert settings.kubeconfig is None


def test_settings_are_frozen(workdir: Path) -> None:
    settings = load_settings(environ={})
    with pytest.raises(AttributeError):
        settings.namespace = "production"  # type: ignore[misc]


@pytest.mark.parametrize(
    "line",
    [
        "MANIFEST_REGISTRY_USERNAME=robot$studenten+ci",
        "MANIFEST_REGISTRY_USERNAME='robot$studenten+ci'",
        'MANIFEST_REGISTRY_USERNAME="robot$studenten+ci"',
    ],
    ids=["unquoted", "single-quoted", "double-quoted"],
)
def test_a_harbor_robot_name_survives_dotenv(workdir: Path, line: str) -> None:
    """Harbor robots are named robot$<project>+<name>; dotenv expands only ${NAME}."""
    (workdir / ".env").write_text(line + "\n")
    assert load_settings(environ={}).registry_username == "robot$studenten+ci"


def test_a_harbor_robot_name_survives_the_environment_and_secrets_file(workdir: Path) -> None:
    environ = {"MANIFEST_REGISTRY_USERNAME": "robot$studenten+ci"}
    assert load_settings(environ=environ).registry_username == "robot$studenten+ci"
    (workdir / "secrets").mkdir()
    (workdir / "secrets" / "registry_username.txt").write_text("robot$studenten+ci\r\n")
    assert load_settings(environ={}).registry_username == "robot$studenten+ci"
