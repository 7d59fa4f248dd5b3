"""ops.secrets without a cluster: the files, the dockerconfigjson format, the plan, the check."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from ops.config import Settings, load_settings
from ops.errors import FileError, SecretsError
from ops.secrets import (
    DB_SECRET,
    DOCKERCONFIGJSON,
    EXAMPLE_DIR,
    PULL_SECRET,
    ClusterSecret,
    DesiredSecret,
    compare,
    desired_secrets,
    dockerconfigjson,
    init,
    init_secrets,
    plan_changes,
    plan_from,
    plan_init,
    read_value,
)
from tests.support.inv import clean_env, run_inv

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "localhost:30002"


def write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.txt").write_text(text)


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    write(
        folder,
        db_username="app_user\n",
        db_password="s3cret-db-pw\n",
        registry_username="harbor-user\n",
        registry_password="s3cret-registry-pw\r\n",
    )
    return folder


def settings_with(folder: Path, **environ: str) -> Settings:
    """Settings reading ``folder``, with no .env and only the given environment."""
    empty = folder.parent / "empty.env"
    empty.write_text("")
    return load_settings({"secrets_dir": str(folder)}, env_file=empty, environ=environ)


def cluster_secret(desired: DesiredSecret, **changes: object) -> ClusterSecret:
    fields: dict[str, object] = {
        "name": desired.name,
        "type": desired.type,
        "data": dict(desired.data),
        "resource_version": "7",
        "labels": {},
        "immutable": False,
    }
    fields.update(changes)
    return ClusterSecret(**fields)  # type: ignore[arg-type]


# --- secrets.init -----------------------------------------------------------------------


def test_the_shipped_templates_hold_placeholders_only() -> None:
    example = ROOT / EXAMPLE_DIR
    names = sorted(p.name for p in example.iterdir())
    assert names == [
        "README.md",
        "db_password.txt",
        "db_username.txt",
        "registry_password.txt",
        "registry_username.txt",
    ]
    assert (example / "db_password.txt").read_text().strip() == "<generate>"
    for name in ("registry_username.txt", "registry_password.txt"):
        with pytest.raises(SecretsError, match="placeholder"):
            read_value(example / name)


def test_init_copies_templates_and_generates_passwords(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    results = init_secrets(ROOT / EXAMPLE_DIR, target)

    actions = {r.path.name: (r.action, r.note) for r in results}
    assert actions == {
        "db_password.txt": ("generated", ""),
        "db_username.txt": ("copied", ""),
        "registry_password.txt": ("copied", "placeholder: edit it"),
        "registry_username.txt": ("copied", "placeholder: edit it"),
    }
    password = read_value(target / "db_password.txt")
    assert len(password) >= 43 and password.isascii() and "<" not in password
    assert read_value(target / "db_username.txt") == "app_user"
    if os.name == "posix":
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        for path in target.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_each_init_generates_a_different_password(tmp_path: Path) -> None:
    init_secrets(ROOT / EXAMPLE_DIR, tmp_path / "a")
    init_secrets(ROOT / EXAMPLE_DIR, tmp_path / "b")
    assert read_value(tmp_path / "a" / "db_password.txt") != read_value(
        tmp_path / "b" / "db_password.txt"
    )


def test_init_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    write(target, db_password="mine\n", registry_password="<your Harbor password>\n")

    results = init_secrets(ROOT / EXAMPLE_DIR, target)

    assert (target / "db_password.txt").read_text() == "mine\n"
    kept = {r.path.name: r.note for r in results if r.action == "kept"}
    assert kept == {"db_password.txt": "", "registry_password.txt": "still a placeholder: edit it"}


def test_init_plan_writes_nothing_and_names_each_file(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    plan = plan_init(ROOT / EXAMPLE_DIR, target)
    assert len(plan.work.files) == 4
    assert not target.exists()
    assert plan.title == "secrets.init" and plan.ask is None
    assert [(i.key, i.value) for i in plan.items] == [
        (str(target / "db_password.txt"), "generate"),
        (str(target / "db_username.txt"), "copy"),
        (str(target / "registry_password.txt"), "copy (placeholder: edit it)"),
        (str(target / "registry_username.txt"), "copy (placeholder: edit it)"),
    ]


def test_init_never_overwrites_a_file_that_appeared_after_its_plan(tmp_path: Path) -> None:
    target = tmp_path / "secrets"
    plan = plan_init(ROOT / EXAMPLE_DIR, target)
    write(target, db_password="typed meanwhile\n")
    with pytest.raises(FileExistsError):
        init(plan)
    assert (target / "db_password.txt").read_text() == "typed meanwhile\n"


def test_init_without_templates_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="template folder"):
        init_secrets(tmp_path / "nowhere", tmp_path / "secrets")


# --- reading values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("pw\n", "pw", id="unix-newline"),
        pytest.param("pw\r\n", "pw", id="windows-newline"),
        pytest.param("pw", "pw", id="no-newline"),
        pytest.param(" pw with spaces ", " pw with spaces ", id="spaces-kept"),
    ],
)
def test_read_value_strips_trailing_newlines_only(tmp_path: Path, text: str, value: str) -> None:
    path = tmp_path / "v.txt"
    path.write_bytes(text.encode())
    assert read_value(path) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param("\n", "is empty", id="only-a-newline"),
        pytest.param("   \n", "is empty", id="only-spaces"),
        pytest.param("<generate>\n", "placeholder", id="generate-marker"),
        pytest.param("<your Harbor password>\n", "placeholder", id="template-text"),
        pytest.param("changeme\n", "placeholder", id="changeme"),
        pytest.param("CHANGE_ME", "placeholder", id="change-me-upper"),
        pytest.param("one\ntwo\n", "more than one line", id="two-lines"),
        # Only the one trailing line ending goes (ops.textfiles): a blank line after is refused.
        pytest.param("pw\n\n", "more than one line", id="blank-line-after"),
    ],
)
def test_read_value_rejects(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "v.txt"
    path.write_text(text)
    with pytest.raises((SecretsError, FileError), match=message) as caught:
        read_value(path)
    assert str(path) in caught.value.message


def test_read_value_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="does not exist"):
        read_value(tmp_path / "absent.txt")


def test_desired_secrets_from_the_files(filled: Path) -> None:
    db, pull = desired_secrets(settings_with(filled))

    assert (db.name, db.type) == (DB_SECRET, "Opaque")
    assert db.data == {"username": b"app_user", "password": b"s3cret-db-pw"}
    assert (pull.name, pull.type) == (PULL_SECRET, "kubernetes.io/dockerconfigjson")
    config = json.loads(pull.data[DOCKERCONFIGJSON])
    assert config["auths"][REGISTRY]["password"] == "s3cret-registry-pw"


def test_values_never_show_in_a_repr(filled: Path) -> None:
    for secret in desired_secrets(settings_with(filled)):
        assert "s3cret" not in repr(secret)
        assert "s3cret" not in repr(cluster_secret(secret))


def test_registry_credentials_from_the_environment_win_over_files(filled: Path) -> None:
    settings = settings_with(filled, MANIFEST_REGISTRY_PASSWORD="from-env-pw")
    _, pull = desired_secrets(settings)
    assert json.loads(pull.data[DOCKERCONFIGJSON])["auths"][REGISTRY]["password"] == "from-env-pw"


def test_a_missing_registry_password_names_both_ways_to_set_it(filled: Path) -> None:
    (filled / "registry_password.txt").unlink()
    with pytest.raises(SecretsError) as caught:
        desired_secrets(settings_with(filled))
    assert "registry_password.txt" in caught.value.message
    assert "MANIFEST_REGISTRY_PASSWORD" in caught.value.hint


# --- the dockerconfigjson format --------------------------------------------------------


def test_dockerconfigjson_is_what_the_kubelet_reads() -> None:
    raw = dockerconfigjson("localhost:30002", "robot$ci", "pa:ss")
    config = json.loads(raw)
    assert list(config) == ["auths"]
    entry = config["auths"]["localhost:30002"]
    assert entry["username"] == "robot$ci"
    assert entry["password"] == "pa:ss"
    # "auth" is base64("user:password"); the password may itself hold a colon.
    assert base64.b64decode(entry["auth"]).decode() == "robot$ci:pa:ss"
    assert raw.decode().isascii()


# --- plan -------------------------------------------------------------------------------


def test_plan_creates_what_is_missing(filled: Path) -> None:
    desired = desired_secrets(settings_with(filled))
    changes = plan_changes(desired, {DB_SECRET: None, PULL_SECRET: None})
    assert [(c.name, c.action, c.changed_keys) for c in changes] == [
        (DB_SECRET, "create", ("password", "username")),
        (PULL_SECRET, "create", (DOCKERCONFIGJSON,)),
    ]


def test_plan_reports_unchanged_when_the_cluster_matches(filled: Path) -> None:
    desired = desired_secrets(settings_with(filled))
    current = {d.name: cluster_secret(d) for d in desired}
    assert [c.action for c in plan_changes(desired, current)] == ["unchanged", "unchanged"]


def test_a_docker_config_is_compared_by_meaning_not_bytes(filled: Path) -> None:
    _, pull = desired_secrets(settings_with(filled))
    reordered = json.dumps(json.loads(pull.data[DOCKERCONFIGJSON]), indent=4).encode()
    current = {PULL_SECRET: cluster_secret(pull, data={DOCKERCONFIGJSON: reordered})}
    assert plan_changes([pull], current)[0].action == "unchanged"


def test_plan_updates_only_the_changed_keys(filled: Path) -> None:
    db, _ = desired_secrets(settings_with(filled))
    current = {DB_SECRET: cluster_secret(db, data={"username": b"app_user", "password": b"old"})}
    (change,) = plan_changes([db], current)
    assert (change.action, change.changed_keys) == ("update", ("password",))


def test_plan_removes_keys_the_files_do_not_have(filled: Path) -> None:
    db, _ = desired_secrets(settings_with(filled))
    current = {DB_SECRET: cluster_secret(db, data={**db.data, "extra": b"x"})}
    (change,) = plan_changes([db], current)
    assert (change.action, change.changed_keys) == ("update", ("extra",))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({"type": "Opaque"}, "type", id="other-type"),
        pytest.param({"immutable": True, "data": {}}, "immutable", id="immutable-and-different"),
    ],
)
def test_plan_replaces_what_cannot_change_in_place(
    filled: Path, changes: dict[str, object], reason: str
) -> None:
    _, pull = desired_secrets(settings_with(filled))
    (change,) = plan_changes([pull], {PULL_SECRET: cluster_secret(pull, **changes)})
    assert change.action == "replace"
    assert reason in change.reason


def test_the_apply_plan_asks_before_overwriting_and_never_holds_a_value(filled: Path) -> None:
    from ops.kube import KubeTarget

    target = KubeTarget(kubeconfig=None, context="docker-desktop", namespace="staging")
    db, pull = desired_secrets(settings_with(filled))
    current = {
        DB_SECRET: cluster_secret(db, data={"username": b"app_user", "password": b"old-pw-9f3"}),
        PULL_SECRET: None,
    }

    plan = plan_from(target, [db, pull], current)

    lines = {item.key: item.value for item in plan.items if item.key}
    assert lines[DB_SECRET] == "update: password=********"
    assert lines[PULL_SECRET] == f"create: {DOCKERCONFIGJSON}=********"
    assert plan.ask is not None and plan.ask.expected == "staging"
    assert any("ALTER ROLE" in w for w in plan.warnings)
    shown = repr(plan) + "".join(i.value for i in plan.items) + "".join(plan.warnings)
    for secret in ("s3cret-db-pw", "s3cret-registry-pw", "old-pw-9f3"):
        assert secret not in shown
    assert [c.action for c in plan.work.changes] == ["update", "create"]

    unchanged = plan_from(target, [db], {DB_SECRET: cluster_secret(db)})
    assert unchanged.ask is None and unchanged.warnings == ()


# --- check ------------------------------------------------------------------------------


def test_check_rows(filled: Path) -> None:
    db, _ = desired_secrets(settings_with(filled))
    same = compare(DB_SECRET, db, cluster_secret(db))
    assert (same.keys, same.values, same.in_sync) == ("same", "equal", True)

    differs = compare(DB_SECRET, db, cluster_secret(db, data={**db.data, "password": b"x"}))
    assert (differs.values, differs.in_sync) == ("differ: password", False)

    extra = compare(DB_SECRET, db, cluster_secret(db, data={"username": b"app_user", "x": b""}))
    assert extra.keys == "missing in cluster: password; only in cluster: x"
    assert not extra.in_sync

    absent = compare(DB_SECRET, db, None)
    assert (absent.cluster, absent.in_sync) == ("absent", False)

    broken = compare(DB_SECRET, SecretsError("secrets/db_password.txt is empty"), None)
    assert (broken.local, broken.in_sync) == ("secrets/db_password.txt is empty", False)


# --- the tasks, through the real `inv` ---------------------------------------------------


def inv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(without=("KUBECONFIG",))
    env["MANIFEST_ENV_FILE"] = str(cwd / "empty.env")
    (cwd / "empty.env").write_text("")
    return run_inv(*args, cwd=cwd, env=env, timeout=60)


def test_inv_secrets_init_prints_no_generated_value(tmp_path: Path) -> None:
    result = inv(
        "secrets.init", "--example", str(ROOT / EXAMPLE_DIR), "--secrets-dir", "s", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    password = read_value(tmp_path / "s" / "db_password.txt")
    assert password not in result.stdout + result.stderr
    assert "generated a random value" in result.stdout
    assert "placeholder: edit it" in result.stderr

    again = inv(
        "secrets.init", "--example", str(ROOT / EXAMPLE_DIR), "--secrets-dir", "s", cwd=tmp_path
    )
    assert again.returncode == 0
    assert read_value(tmp_path / "s" / "db_password.txt") == password


def test_inv_secrets_apply_refuses_a_placeholder_in_one_line(tmp_path: Path) -> None:
    init_secrets(ROOT / EXAMPLE_DIR, tmp_path / "s")
    result = inv("secrets.apply", "--secrets-dir", "s", "--dry-run", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error:") and "placeholder" in line and "registry" in line
