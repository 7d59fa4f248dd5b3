"""The manifests on the lab cluster: every overlay passes a server-side dry-run apply, and the
test overlay runs for real (PostgreSQL ready, the backup daemon backing up, the app
answering through its Service).

Objects are rendered with kustomize and moved into the test's own namespace. Secrets come
from `inv secrets.apply`, so harbor-regcred is the task's own: the node pulls the lab's
PostgreSQL image with it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Registry, wait_until
from tests.manifests.render import K8S, OVERLAYS, Manifest, find, find_kustomize, in_namespace
from tests.manifests.render import render as kustomize_build
from tests.support.inv import clean_env, run_inv
from tests.support.services import missing

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FIELD_MANAGER = "manifest-e2e"


def rendered(overlay: str) -> list[Manifest]:
    kustomize = find_kustomize()
    if kustomize is None:
        missing("kustomize not found (see tests/manifests/render.py)")
    return kustomize_build(kustomize, K8S / "overlays" / overlay)


@pytest.fixture(scope="module")
def dynamic(kube_api: Any) -> Any:
    from kubernetes.dynamic import DynamicClient

    return DynamicClient(kube_api)


def apply(dynamic: Any, manifests: list[Manifest], namespace: str, *, dry_run: bool) -> None:
    """Server-side apply, with unknown fields refused (as `kubectl apply --server-side`)."""
    for manifest in in_namespace(manifests, namespace):
        resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
        resource.server_side_apply(
            body=manifest,
            namespace=namespace,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            dry_run="All" if dry_run else None,
            query_params=[("fieldValidation", "Strict")],
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server_side_dry_run_apply(
    dynamic: Any, core_v1: Any, namespace: str, overlay: str
) -> None:
    from kubernetes import client

    manifests = rendered(overlay)

    apply(dynamic, manifests, namespace, dry_run=True)

    assert client.AppsV1Api(core_v1.api_client).list_namespaced_deployment(namespace).items == []
    assert (
        core_v1.list_namespaced_config_map(
            namespace, label_selector="app.kubernetes.io/part-of=manifest"
        ).items
        == []
    )


# --- the test overlay, for real --------------------------------------------------------


NOTEPAD_BOM, NOTEPAD_EOL = b"\xef\xbb\xbf", b"\r\n"  # Notepad's "UTF-8 with BOM", CRLF


def secrets_apply(namespace: str, context: str, registry: Registry, folder: Path) -> dict[str, str]:
    """db-credentials and harbor-regcred, made by the task itself from files saved as
    Windows Notepad saves them (UTF-8 with BOM, CRLF). Returns the values typed in them."""
    secrets = folder / "secrets"
    secrets.mkdir()
    values = {
        "db_username": "app_user",
        "db_password": "e2e-" + uuid.uuid4().hex,
        "registry_username": registry.user,
        "registry_password": registry.password,
    }
    for name, value in values.items():
        (secrets / f"{name}.txt").write_bytes(NOTEPAD_BOM + value.encode() + NOTEPAD_EOL)
    (folder / "empty.env").write_text("")
    env = clean_env()
    env["MANIFEST_ENV_FILE"] = str(folder / "empty.env")
    where = ["--context", context, "--namespace", namespace]
    result = run_inv("secrets.apply", *where, cwd=folder, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return values


def assert_secrets_hold_the_typed_values(
    core_v1: Any, namespace: str, values: dict[str, str], registry: Registry
) -> None:
    """Seen: Notepad's BOM went into db-credentials and into harbor-regcred's auth."""
    import base64

    db = core_v1.read_namespaced_secret("db-credentials", namespace).data
    assert base64.b64decode(db["password"]) == values["db_password"].encode()
    assert base64.b64decode(db["username"]) == values["db_username"].encode()
    regcred = core_v1.read_namespaced_secret("harbor-regcred", namespace).data
    config = json.loads(base64.b64decode(regcred[".dockerconfigjson"]))
    auth = base64.b64decode(config["auths"][registry.host]["auth"])
    assert auth == f"{values['registry_username']}:{values['registry_password']}".encode()
    assert b"\xef\xbb\xbf" not in auth and b"\r" not in auth


def pod_problem(core_v1: Any, namespace: str, selector: str) -> str:
    """Why pods are not starting (image pull, crash), for a failing wait's message."""
    lines = []
    for pod in core_v1.list_namespaced_pod(namespace, label_selector=selector).items:
        for status in (pod.status.init_container_statuses or []) + (
            pod.status.container_statuses or []
        ):
            waiting = status.state.waiting if status.state else None
            if waiting:
                lines.append(
                    f"{pod.metadata.name}/{status.name}: {waiting.reason} {waiting.message or ''}"
                )
    events = core_v1.list_namespaced_event(namespace).items
    lines += [f"event {e.involved_object.name}: {e.reason} {e.message}" for e in events[-8:]]
    return "\n".join(lines)


def wait_for(
    check: Callable[[], bool], *, timeout: float, what: str, explain: Callable[[], str]
) -> None:
    try:
        wait_until(check, timeout=timeout, what=what, interval=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain()}") from None


def test_the_test_overlay_runs_on_the_lab_cluster(
    dynamic: Any,
    core_v1: Any,
    namespace: str,
    kube_context: str,
    registry: Registry,
    app_image: str,
    tmp_path: Path,
) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(core_v1.api_client)
    typed = secrets_apply(namespace, kube_context, registry, tmp_path)
    assert_secrets_hold_the_typed_values(core_v1, namespace, typed, registry)
    manifests = rendered("test")
    deployment = find(manifests, "Deployment", "manifest-app")
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = app_image

    apply(dynamic, manifests, namespace, dry_run=False)

    def ready(selector: str, count: int) -> bool:
        pods = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
        ready_pods = [
            p
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return len(ready_pods) >= count

    postgres = "app.kubernetes.io/name=postgres"
    wait_for(
        lambda: ready(postgres, 1),
        timeout=240,
        what="postgres-0 Ready",
        explain=lambda: pod_problem(core_v1, namespace, postgres),
    )
    pvc = core_v1.read_namespaced_persistent_volume_claim("postgres-data-postgres-0", namespace)
    assert pvc.status.phase == "Bound"
    # PostgreSQL took the password as typed into Notepad (no BOM): a TCP login with it works.
    login = exec_in(
        core_v1,
        namespace,
        "postgres-0",
        [
            "env",
            f"PGPASSWORD={typed['db_password']}",
            "psql", "-h", "127.0.0.1", "-U", typed["db_username"], "-d", "studentdb",
            "-tAc", "SELECT 'logged-in'",
        ],
    )  # fmt: skip
    assert "logged-in" in login, login

    backup = "app.kubernetes.io/name=postgres-backup"

    def backed_up() -> bool:
        pods = core_v1.list_namespaced_pod(namespace, label_selector=backup).items
        running = [p for p in pods if p.status.phase == "Running"]
        if not running:
            return False
        log = core_v1.read_namespaced_pod_log(running[0].metadata.name, namespace)
        return " backup ok file=continuous-" in log

    wait_for(
        backed_up,
        timeout=180,
        what="the daemon's first good backup",
        explain=lambda: pod_problem(core_v1, namespace, backup),
    )
    daemon = core_v1.list_namespaced_pod(namespace, label_selector=backup).items[0].metadata.name
    listing = exec_in(
        core_v1, namespace, daemon, ["sh", "-c", "cd /backups && sha256sum -c *.sha256 && ls"]
    )
    assert ": OK" in listing and ".part" not in listing

    app = "app.kubernetes.io/name=manifest-app"
    wait_for(
        lambda: ready(app, 2),
        timeout=300,
        what="2 app pods Ready",
        explain=lambda: pod_problem(core_v1, namespace, app),
    )
    status = apps.read_namespaced_deployment("manifest-app", namespace).status
    assert status.available_replicas == 2

    created = service_call(core_v1, namespace, "POST", "api/student", {"name": "Max", "age": 25})
    assert created["name"] == "Max"
    students = service_call(core_v1, namespace, "GET", "api/student")
    assert {"id": created["id"], "name": "Max", "age": 25} in students


def exec_in(core_v1: Any, namespace: str, pod: str, command: list[str]) -> str:
    from kubernetes.stream import stream

    output: str = stream(
        core_v1.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=command,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    return output


def service_call(core_v1: Any, namespace: str, method: str, path: str, body: object = None) -> Any:
    """A request to manifest-app-service through the API server's service proxy."""
    api = core_v1.api_client
    url = f"/api/v1/namespaces/{namespace}/services/manifest-app-service:http/proxy/{path}"
    headers = {"Accept": "application/json", "Content-Type": "application/json"}
    response = api.call_api(
        *api.param_serialize(
            method, url, header_params=headers, body=body, auth_settings=["BearerToken"]
        ),
        _request_timeout=30,
    )
    response.read()
    assert 200 <= response.status < 300, (response.status, response.data)
    return json.loads(response.data)
