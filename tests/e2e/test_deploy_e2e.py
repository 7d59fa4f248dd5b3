"""`inv deploy` and `inv pipeline` from nothing, and the seed's disaster-recovery table.

Every test works in a namespace of its own that does not exist when it starts (deploy
creates it) and is deleted afterwards, with the volumes deploy retained. The tasks run with
no `kubectl` (and no `kustomize`) on PATH.

The disaster-recovery rows print their recovery time (RTO: from the failure until the app
answers GET /api/student with every row) and data lost (RPO); run with `-s` to see them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    APP_REPOSITORY,
    Registry,
    copy_app_context,
    wait_until,
)
from tests.e2e.test_manifests_e2e import service_call
from tests.support.inv import clean_env, run_inv
from tests.support.services import missing

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RENDERED = ROOT / "k8s" / "rendered"


@dataclass
class Lab:
    """One namespace (created by deploy, not by the test) and an `inv` that runs there."""

    namespace: str
    folder: Path
    env: dict[str, str]
    core_v1: Any
    timings: dict[str, float] = field(default_factory=dict)

    def inv(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = run_inv(*args, cwd=self.folder, env=self.env, timeout=timeout)
        self.timings[args[0]] = time.monotonic() - started
        return result

    def namespace_exists(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core_v1.read_namespace(self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def students(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = service_call(
            self.core_v1, self.namespace, "GET", "api/student"
        )
        return result

    def assert_no_secret_in(self, result: subprocess.CompletedProcess[str]) -> None:
        for name in ("db_password", "registry_password"):
            value = (self.folder / "secrets" / f"{name}.txt").read_text().strip()
            assert value not in result.stdout + result.stderr


def make_lab(
    folder: Path, namespace: str, kube_context: str, registry: Registry, core_v1: Any
) -> Lab:
    secrets = folder / "secrets"
    secrets.mkdir()
    for name, value in {
        "db_username": "app_user",
        "db_password": "e2e-" + uuid.uuid4().hex,
        "registry_username": registry.user,
        "registry_password": registry.password,
    }.items():
        (secrets / f"{name}.txt").write_text(value + "\n")
    (folder / "empty.env").write_text("")
    no_tools = folder / "no-tools"  # PATH: no kubectl, no kustomize, nothing else either
    no_tools.mkdir()
    env = clean_env(
        PATH=str(no_tools),
        COLUMNS="200",
        MANIFEST_ENV_FILE=str(folder / "empty.env"),
        MANIFEST_CONTEXT=kube_context,
        MANIFEST_NAMESPACE=namespace,
        MANIFEST_OVERLAY="test",
        MANIFEST_MANIFESTS_DIR=str(RENDERED),
        MANIFEST_SECRETS_DIR=str(secrets),
        MANIFEST_BACKUPS_DIR=str(folder / "backups"),
        MANIFEST_REGISTRY=registry.host,
        MANIFEST_REGISTRY_CA_FILE=str(registry.ca or ""),
        MANIFEST_ROLLOUT_TIMEOUT="420",
    )
    assert shutil.which("kubectl", path=env["PATH"]) is None
    return Lab(namespace=namespace, folder=folder, env=env, core_v1=core_v1)


def forget_namespace(core_v1: Any, namespace: str) -> None:
    """Delete the namespace and the volumes deploy retained for it (their data too)."""
    from kubernetes.client.exceptions import ApiException

    def ours(pv: Any) -> bool:
        ref = pv.spec.claim_ref
        return ref is not None and ref.namespace == namespace

    def gone_already(call: Any, *args: Any) -> None:  # the PV controller races us: fine
        try:
            call(*args)
        except ApiException as exc:
            if exc.status != 404:
                raise

    for pv in core_v1.list_persistent_volume().items:
        if ours(pv):
            gone_already(
                core_v1.patch_persistent_volume,
                pv.metadata.name,
                {"spec": {"persistentVolumeReclaimPolicy": "Delete"}},
            )
    try:
        core_v1.delete_namespace(namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise
    # Released before the policy went back to Delete: no deleter will come for those.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = [pv for pv in core_v1.list_persistent_volume().items if ours(pv)]
        released = [pv for pv in left if pv.status.phase in ("Released", "Failed")]
        for pv in released:
            gone_already(core_v1.delete_persistent_volume, pv.metadata.name)
        if not left:
            return
        time.sleep(2)


@pytest.fixture
def lab(tmp_path: Path, core_v1: Any, kube_context: str, registry: Registry) -> Iterator[Lab]:
    namespace = f"e2e-deploy-{uuid.uuid4().hex[:8]}"
    yield make_lab(tmp_path, namespace, kube_context, registry, core_v1)
    forget_namespace(core_v1, namespace)


def pushed_digest(registry: Registry, image: str) -> str:
    from ops.registry import Registry as RegistryApi
    from ops.registry import manifest_digest

    repository_tag = image.split("/", 1)[1]
    repository, tag = repository_tag.rsplit(":", 1)
    api = RegistryApi(
        host=registry.host, username=registry.user, password=registry.password, ca_file=registry.ca
    )
    return f"{image.rsplit(':', 1)[0]}@{manifest_digest(api, repository, tag)}"


def push_latest(docker_client: Any, registry: Registry, app_image: str) -> str:
    """Push ``app_image`` as `<registry>/studenten/manifest-app:latest`, what the overlay runs.

    In a developer's registry `latest` is what the last `inv pipeline` pushed; here, the app
    image built for this session. A re-created Deployment pulls it again."""
    latest = f"{APP_REPOSITORY}:latest"
    docker_client.images.get(app_image).tag(latest)
    errors = [
        chunk["error"]
        for chunk in docker_client.api.push(
            APP_REPOSITORY,
            tag="latest",
            stream=True,
            decode=True,
            auth_config=registry.auth_config(),
        )
        if "error" in chunk
    ]
    assert errors == [], errors
    return latest


def writes_by_deploy(lab: Lab) -> dict[str, object]:
    """Every object of the overlay as deploy last wrote it: kind/name → (generation, when).

    Not the resourceVersion: controllers write status (the HPA's conditions every sync), which
    moves it without deploy writing anything. A no-op server-side apply is not persisted, so
    deploy's managedFields entry keeps its time unless deploy really changed the object.
    """
    from kubernetes.dynamic import DynamicClient

    from ops.deploy import FIELD_MANAGER, in_namespace, load_rendered

    dynamic = DynamicClient(lab.core_v1.api_client)
    writes: dict[str, object] = {}
    for obj in in_namespace(load_rendered(RENDERED / "test.yaml"), lab.namespace):
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        live = resource.get(name=obj["metadata"]["name"], namespace=lab.namespace)
        ours = [
            (entry.operation, entry.time)
            for entry in live.metadata.managedFields or []
            if entry.manager == FIELD_MANAGER
        ]
        assert ours, f"{obj['kind']}/{obj['metadata']['name']} has no {FIELD_MANAGER} fields"
        writes[f"{obj['kind']}/{obj['metadata']['name']}"] = (live.metadata.generation, ours)
    return writes


# --- deploy from nothing ------------------------------------------------------------------


def test_deploy_from_nothing_then_a_second_deploy_changes_nothing(
    lab: Lab, app_image: str, registry: Registry
) -> None:
    from kubernetes import client

    image = pushed_digest(registry, app_image)

    planned = lab.inv("deploy", "--dry-run")

    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert f"{lab.namespace} (create)" in planned.stdout
    assert "StatefulSet/postgres" in planned.stdout and "create" in planned.stdout
    assert "Dry run: nothing was changed." in planned.stdout
    assert not lab.namespace_exists()
    lab.assert_no_secret_in(planned)

    first = lab.inv("deploy", "--image", image)

    assert first.returncode == 0, first.stdout + first.stderr
    assert "ready: StatefulSet/postgres, Deployment/manifest-app" in first.stdout
    assert " 0 changed" in first.stdout
    lab.assert_no_secret_in(first)
    apps = client.AppsV1Api(lab.core_v1.api_client)
    live = apps.read_namespaced_deployment("manifest-app", lab.namespace)
    assert live.spec.template.spec.containers[0].image == image
    assert live.status.available_replicas == 2
    created = service_call(
        lab.core_v1, lab.namespace, "POST", "api/student", {"name": "Max", "age": 25}
    )
    assert {"id": created["id"], "name": "Max", "age": 25} in lab.students()
    claim = lab.core_v1.read_namespaced_persistent_volume_claim(
        "postgres-data-postgres-0", lab.namespace
    )
    volume = lab.core_v1.read_persistent_volume(claim.spec.volume_name)
    assert volume.spec.persistent_volume_reclaim_policy == "Retain"
    before = writes_by_deploy(lab)

    second = lab.inv("deploy")

    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 created, 0 changed" in second.stdout, second.stdout
    assert writes_by_deploy(lab) == before  # not one object written
    live = apps.read_namespaced_deployment("manifest-app", lab.namespace)
    assert live.spec.template.spec.containers[0].image == image  # the digest stays


def test_a_first_deploy_without_secret_files_names_secrets_init(lab: Lab) -> None:
    (lab.folder / "secrets" / "db_password.txt").unlink()

    result = lab.inv("deploy")

    assert result.returncode == 1
    assert "inv secrets.init" in result.stderr
    assert "Traceback" not in result.stderr
    assert not lab.namespace_exists()


# --- pipeline on an empty namespace ------------------------------------------------------


def test_pipeline_on_an_empty_namespace_deploys_and_the_app_answers(
    lab: Lab, registry: Registry, docker_client: Any
) -> None:
    from kubernetes import client

    base = os.environ.get("MANIFEST_TEST_PYTHON_IMAGE", "")
    if not base:
        missing("MANIFEST_TEST_PYTHON_IMAGE not set (source the lab env)")
    context = lab.folder / "app"
    context.mkdir()
    copy_app_context(context)
    repository = f"e2e/deploy-pipeline-{uuid.uuid4().hex[:8]}"
    lab.env.update(
        MANIFEST_BUILD_CONTEXT=str(context),
        MANIFEST_BASE_IMAGE=base,
        MANIFEST_IMAGE_REPOSITORY=repository,
        MANIFEST_REGISTRY_USERNAME=registry.user,
        MANIFEST_REGISTRY_PASSWORD=registry.password,
    )
    try:
        result = lab.inv("pipeline", timeout=1500)

        assert result.returncode == 0, result.stdout + result.stderr
        assert f"nothing deployed in {lab.namespace} yet" in result.stdout
        assert "ready: StatefulSet/postgres, Deployment/manifest-app" in result.stdout
        lab.assert_no_secret_in(result)
        apps = client.AppsV1Api(lab.core_v1.api_client)
        live = apps.read_namespaced_deployment("manifest-app", lab.namespace)
        image = live.spec.template.spec.containers[0].image
        assert image.startswith(f"{registry.host}/{repository}@sha256:")
        assert lab.students() == []
        print(f"pipeline on an empty namespace: {lab.timings['pipeline']:.0f} s")
    finally:
        for tag in [t for i in docker_client.images.list() for t in i.tags if repository in t]:
            docker_client.images.remove(tag, force=True)


def test_pipeline_refuses_before_building_when_secret_files_are_missing(lab: Lab) -> None:
    (lab.folder / "secrets" / "db_password.txt").unlink()
    (lab.folder / "app").mkdir()
    (lab.folder / "app" / "Dockerfile").write_text("FROM scratch\n")
    lab.env["MANIFEST_BUILD_CONTEXT"] = str(lab.folder / "app")

    result = lab.inv("pipeline")

    assert result.returncode == 1
    assert "inv secrets.init" in result.stderr
    assert "Step 1/" not in result.stdout  # nothing was built
    assert not lab.namespace_exists()


# --- the seed's disaster-recovery table ----------------------------------------------------


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory,
    core_v1: Any,
    kube_context: str,
    registry: Registry,
    app_image: str,
    docker_client: Any,
) -> Iterator[Lab]:
    """One deployed system with a few rows, shared by the rows of the table (in order)."""
    namespace = f"e2e-dr-{uuid.uuid4().hex[:8]}"
    lab = make_lab(tmp_path_factory.mktemp("dr"), namespace, kube_context, registry, core_v1)
    latest = push_latest(docker_client, registry, app_image)
    try:
        result = lab.inv("deploy", "--image", pushed_digest(registry, latest))
        assert result.returncode == 0, result.stdout + result.stderr
        for name, age in (("Max", 25), ("Erika", 31), ("Jonas", 22)):
            service_call(core_v1, namespace, "POST", "api/student", {"name": name, "age": age})
        yield lab
    finally:
        forget_namespace(core_v1, namespace)


def answers_with(lab: Lab, rows: list[dict[str, Any]], timeout: float = 600) -> float:
    """Wait until GET /api/student answers exactly ``rows``; returns when (monotonic)."""

    def same() -> bool:
        try:
            return sorted(lab.students(), key=lambda r: r["id"]) == rows
        except Exception:  # not answering yet: the service proxy returns 503 meanwhile
            return False

    wait_until(same, timeout=timeout, what=f"GET /api/student with {len(rows)} rows", interval=1)
    return time.monotonic()


def report(row: str, started: float, ended: float, rpo: str) -> None:
    line = {"row": row, "rto_seconds": round(ended - started, 1), "rpo": rpo}
    print("DR " + json.dumps(line))


def test_dr_pod_crashed_comes_back_by_itself(deployed: Lab) -> None:
    lab = deployed
    rows = sorted(lab.students(), key=lambda r: r["id"])
    assert len(rows) == 3
    app_pods = lab.core_v1.list_namespaced_pod(
        lab.namespace, label_selector="app.kubernetes.io/name=manifest-app"
    ).items
    started = time.monotonic()
    for pod in ["postgres-0", app_pods[0].metadata.name]:
        lab.core_v1.delete_namespaced_pod(pod, lab.namespace, grace_period_seconds=0)

    ended = answers_with(lab, rows)

    report("pod crashed (postgres-0 and an app pod killed)", started, ended, "0 rows lost")


def test_dr_deployment_deleted_inv_deploy_brings_it_back(deployed: Lab) -> None:
    from kubernetes import client

    lab = deployed
    rows = sorted(lab.students(), key=lambda r: r["id"])
    apps = client.AppsV1Api(lab.core_v1.api_client)
    apps.delete_namespaced_deployment("manifest-app", lab.namespace)
    apps.delete_namespaced_stateful_set("postgres", lab.namespace)
    wait_until(
        lambda: (
            not apps.list_namespaced_deployment(
                lab.namespace, field_selector="metadata.name=manifest-app"
            ).items
        ),
        timeout=60,
        what="the Deployment gone",
    )
    started = time.monotonic()

    result = lab.inv("deploy")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 created" in result.stdout  # the Deployment and the StatefulSet, nothing else
    ended = answers_with(lab, rows)
    report("Deployment and StatefulSet deleted → inv deploy", started, ended, "0 rows lost")


def test_dr_namespace_deleted_the_volume_is_rebound_and_the_data_is_back(deployed: Lab) -> None:
    lab = deployed
    rows = sorted(lab.students(), key=lambda r: r["id"])
    claim = lab.core_v1.read_namespaced_persistent_volume_claim(
        "postgres-data-postgres-0", lab.namespace
    )
    volume = claim.spec.volume_name
    lab.core_v1.delete_namespace(lab.namespace)
    wait_until(lambda: not lab.namespace_exists(), timeout=300, what="the namespace gone")
    started = time.monotonic()  # recovery can begin once the namespace is gone
    assert lab.core_v1.read_persistent_volume(volume).status.phase == "Released"

    result = lab.inv("deploy")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PersistentVolume/{volume}" in result.stdout and "re-bind" in result.stdout
    ended = answers_with(lab, rows)
    again = lab.core_v1.read_namespaced_persistent_volume_claim(
        "postgres-data-postgres-0", lab.namespace
    )
    assert again.spec.volume_name == volume
    report("namespace deleted → inv deploy (PV re-bound)", started, ended, "0 rows lost")


def test_dr_cluster_reset_simulated_deploy_and_restore_bring_every_row_back(
    deployed: Lab,
) -> None:
    """Simulated in this namespace: every object *and* every volume of it deleted (what a
    reset cluster has of it: nothing), the local backups/ folder kept. The lab's other
    namespaces, etcd and the node are not touched."""
    lab = deployed
    backed_up = lab.inv("backup.now")
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    backup_done = time.monotonic()
    dumps = sorted((lab.folder / "backups").glob("*.dump"))
    assert len(dumps) == 1
    rows = sorted(lab.students(), key=lambda r: r["id"])
    late = service_call(
        lab.core_v1, lab.namespace, "POST", "api/student", {"name": "After", "age": 40}
    )

    failed = time.monotonic()
    forget_namespace(lab.core_v1, lab.namespace)  # objects and volumes: all gone
    wait_until(lambda: not lab.namespace_exists(), timeout=300, what="the namespace gone")
    started = time.monotonic()

    deployed_again = lab.inv("deploy")
    assert deployed_again.returncode == 0, deployed_again.stdout + deployed_again.stderr
    assert "re-bind" not in deployed_again.stdout  # no volume survived: a fresh database
    assert lab.students() == []
    restored = lab.inv("backup.restore", "--file", str(dumps[0]), "--yes")

    assert restored.returncode == 0, restored.stdout + restored.stderr
    ended = answers_with(lab, rows)
    assert late["id"] not in {r["id"] for r in lab.students()}  # written after the backup
    report(
        "cluster reset (simulated: namespace and its volumes deleted) → deploy + restore",
        started,
        ended,
        f"1 row lost (written after the newest backup; it was {failed - backup_done:.0f} s old)",
    )
