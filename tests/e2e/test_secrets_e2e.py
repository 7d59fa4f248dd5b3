"""`inv secrets.apply` and `inv secrets.check` against the lab cluster, through the real CLI.

Each test works in its own namespace; no value may ever appear in what the tasks print.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Registry
from tests.support.inv import clean_env, run_inv

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Workspace:
    """A folder with its own secrets/ and .env, and the `inv` to run there."""

    folder: Path
    namespace: str
    context: str

    @property
    def secrets(self) -> Path:
        return self.folder / "secrets"

    def write(self, name: str, value: str) -> None:
        self.secrets.mkdir(exist_ok=True)
        (self.secrets / f"{name}.txt").write_text(value + "\n")

    def inv(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = clean_env()
        env["MANIFEST_ENV_FILE"] = str(self.folder / "empty.env")
        where = ["--context", self.context, "--namespace", self.namespace]
        return run_inv(*args, *where, cwd=self.folder, env=env, input=stdin, timeout=120)

    def values(self) -> list[str]:
        """Every secret value in the folder, and the forms it could leak in."""
        found = []
        for path in self.secrets.glob("*.txt"):
            value = path.read_text().strip()
            if path.name != "db_username.txt":  # the user name is no secret, and short
                found += [value, base64.b64encode(value.encode()).decode()]
        return found


@pytest.fixture
def workspace(tmp_path: Path, namespace: str, kube_context: str, registry: Registry) -> Workspace:
    (tmp_path / "empty.env").write_text("")
    ws = Workspace(folder=tmp_path, namespace=namespace, context=kube_context)
    ws.write("db_username", "app_user")
    ws.write("db_password", "e2e-db-" + os.urandom(12).hex())
    ws.write("registry_username", registry.user)
    ws.write("registry_password", registry.password)
    return ws


def cluster_data(core_v1: Any, namespace: str, name: str) -> tuple[str, dict[str, bytes]]:
    secret = core_v1.read_namespaced_secret(name, namespace)
    return secret.type, {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def assert_no_value_in(ws: Workspace, result: subprocess.CompletedProcess[str]) -> None:
    shown = result.stdout + result.stderr
    for value in ws.values():
        assert value not in shown


def test_apply_creates_both_secrets_then_reports_unchanged(
    workspace: Workspace, core_v1: Any, registry: Registry
) -> None:
    first = workspace.inv("secrets.apply")

    assert first.returncode == 0, first.stderr
    assert "db-credentials: created (password, username)" in first.stdout
    assert "harbor-regcred: created (.dockerconfigjson)" in first.stdout
    assert_no_value_in(workspace, first)
    kind, data = cluster_data(core_v1, workspace.namespace, "db-credentials")
    assert kind == "Opaque"
    assert data == {
        "username": b"app_user",
        "password": (workspace.secrets / "db_password.txt").read_text().strip().encode(),
    }
    kind, data = cluster_data(core_v1, workspace.namespace, "harbor-regcred")
    assert kind == "kubernetes.io/dockerconfigjson"
    auth = json.loads(data[".dockerconfigjson"])["auths"][registry.host]
    assert (auth["username"], auth["password"]) == (registry.user, registry.password)

    second = workspace.inv("secrets.apply")

    assert second.returncode == 0, second.stderr
    assert "db-credentials: unchanged" in second.stdout
    assert "harbor-regcred: unchanged" in second.stdout
    check = workspace.inv("secrets.check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "in sync" in check.stdout
    assert_no_value_in(workspace, check)


def test_a_changed_file_updates_the_secret_after_confirmation(
    workspace: Workspace, core_v1: Any
) -> None:
    assert workspace.inv("secrets.apply").returncode == 0
    before = cluster_data(core_v1, workspace.namespace, "db-credentials")
    workspace.write("db_password", "e2e-new-" + os.urandom(12).hex())

    refused = workspace.inv("secrets.apply")  # no terminal, no --yes: it must not go on

    assert refused.returncode == 1
    assert "Not confirmed; nothing was changed." in refused.stderr
    assert cluster_data(core_v1, workspace.namespace, "db-credentials") == before

    check = workspace.inv("secrets.check")
    assert check.returncode == 1
    assert "differ: password" in check.stdout
    assert_no_value_in(workspace, check)

    typed = workspace.inv("secrets.apply", stdin=workspace.namespace + "\n")

    assert typed.returncode == 0, typed.stderr
    assert "db-credentials: updated (password)" in typed.stdout
    assert "harbor-regcred: unchanged" in typed.stdout
    assert "ALTER ROLE" in typed.stderr
    assert_no_value_in(workspace, typed)
    _, data = cluster_data(core_v1, workspace.namespace, "db-credentials")
    assert data["password"] == (workspace.secrets / "db_password.txt").read_text().strip().encode()


def test_dry_run_changes_nothing_and_masks_the_plan(workspace: Workspace, core_v1: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    result = workspace.inv("secrets.apply", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "create: password=********, username=********" in result.stdout
    assert "Dry run: nothing was changed." in result.stdout
    assert_no_value_in(workspace, result)
    for name in ("db-credentials", "harbor-regcred"):
        with pytest.raises(ApiException) as caught:
            core_v1.read_namespaced_secret(name, workspace.namespace)
        assert caught.value.status == 404

    assert workspace.inv("secrets.apply").returncode == 0
    before = cluster_data(core_v1, workspace.namespace, "db-credentials")
    workspace.write("db_password", "e2e-dry-" + os.urandom(12).hex())
    planned = workspace.inv("secrets.apply", "--dry-run")
    assert planned.returncode == 0
    assert "update: password=********" in planned.stdout
    assert cluster_data(core_v1, workspace.namespace, "db-credentials") == before


def test_a_pull_secret_of_another_type_is_replaced(
    workspace: Workspace, core_v1: Any, registry: Registry
) -> None:
    from kubernetes import client

    core_v1.create_namespaced_secret(
        workspace.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="harbor-regcred", labels={"team": "kept"}),
            type="Opaque",
            string_data={"note": "made by hand"},
        ),
    )
    result = workspace.inv("secrets.apply", "--yes")

    assert result.returncode == 0, result.stderr
    assert "harbor-regcred: replaced" in result.stdout
    secret = core_v1.read_namespaced_secret("harbor-regcred", workspace.namespace)
    assert secret.type == "kubernetes.io/dockerconfigjson"
    assert set(secret.data) == {".dockerconfigjson"}
    assert secret.metadata.labels["team"] == "kept"
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "manifest-secrets"


def test_a_missing_namespace_is_one_clear_line(workspace: Workspace) -> None:
    workspace.namespace = workspace.namespace + "-absent"
    result = workspace.inv("secrets.apply")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"namespace '{workspace.namespace}' not found" in line
