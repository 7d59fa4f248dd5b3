"""`inv pipeline` end to end, as a user runs it: build → push both tags → restart → ready.

The Deployment runs `<registry>/<repo>:latest` with imagePullPolicy Always (as the app's
does), so after the pipeline its new pods must run exactly the digest that was pushed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.registry import Registry as RegistryApi
from ops.registry import manifest_digest
from tests.support.inv import clean_env, run_inv
from tests.support.registry import list_tags
from tests.support.services import missing

from .conftest import Registry
from .test_rollout_e2e import DEPLOYMENT, deployment_body

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")


SERVE = "trap 'exit 0' TERM; while true; do sleep 1; done"
CRASH = "echo starting version three; echo 'fatal: DB_HOST is not set' >&2; exit 3"


def write_context(folder: Path, message: str, command: str = SERVE) -> None:
    folder.mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, folder / "busybox")
    (folder / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        f"RUN echo {message} > /message\nUSER 1000\n"
        f"CMD {json.dumps(['sh', '-c', command])}\n",
        encoding="utf-8",
    )


@pytest.fixture
def repository() -> Iterator[str]:
    """A fresh repository; its local images are removed afterwards."""
    name = f"e2e/pipeline-{uuid.uuid4().hex[:8]}"
    yield name
    if os.environ.get("DOCKER_HOST"):
        import docker

        engine = docker.from_env()
        for image in engine.images.list():
            for tag in image.tags:
                if f"/{name}:" in tag:
                    engine.images.remove(tag, force=True)
        engine.close()


def test_pipeline_builds_pushes_and_rolls_out(
    tmp_path: Path,
    registry: Registry,
    kube_api: Any,
    kube_context: str,
    namespace: str,
    harbor_regcred: str,
    repository: str,
) -> None:
    from kubernetes import client

    if not BUSYBOX.is_file():
        missing(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    if not os.environ.get("DOCKER_HOST"):
        missing("DOCKER_HOST is not set (source $MANIFEST_LAB_DIR/env)")
    env = clean_env()
    env.update(
        COLUMNS="200",
        MANIFEST_REGISTRY=registry.host,
        MANIFEST_IMAGE_REPOSITORY=repository,
        MANIFEST_REGISTRY_USERNAME=registry.user,
        MANIFEST_REGISTRY_PASSWORD=registry.password,
        MANIFEST_REGISTRY_CA_FILE=str(registry.ca or ""),
        MANIFEST_CONTEXT=kube_context,
        MANIFEST_NAMESPACE=namespace,
        MANIFEST_DEPLOYMENT=DEPLOYMENT,
    )
    (tmp_path / ".env").touch()

    def pipeline(*args: str) -> subprocess.CompletedProcess[str]:
        return run_inv("pipeline", *args, env=env, cwd=tmp_path, timeout=600)

    # Version 1 goes out without a rollout; then the Deployment is created on it.
    write_context(tmp_path / "app", "one")
    first = pipeline("--no-rollout")
    assert first.returncode == 0, first.stderr
    apps = client.AppsV1Api(kube_api)
    image = f"{registry.host}/{repository}:latest"
    apps.create_namespaced_deployment(namespace, deployment_body(image, harbor_regcred))

    # Version 2: the whole pipeline.
    write_context(tmp_path / "app", "two")
    second = pipeline("--tag", "e2e")
    assert second.returncode == 0, second.stdout + second.stderr
    assert registry.password not in second.stdout + second.stderr
    assert "Step 1/" in second.stdout and "pushed" in second.stdout
    assert f"rolled out {DEPLOYMENT}" in second.stdout

    api = RegistryApi(
        host=registry.host, username=registry.user, password=registry.password, ca_file=registry.ca
    )
    tags = list_tags(api, repository)
    assert "latest" in tags and "e2e" in tags
    digest = manifest_digest(api, repository, "latest")
    assert digest == manifest_digest(api, repository, "e2e")
    version_tags = [t for t in tags if t.startswith("v1-")]
    assert digest in {manifest_digest(api, repository, t) for t in version_tags}

    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector="app=e2e-app")
    running = [
        p
        for p in pods.items
        if p.metadata.deletion_timestamp is None and p.status.container_statuses
    ]
    assert len(running) == 2
    for pod in running:
        status = pod.status.container_statuses[0]
        assert status.ready
        assert status.image_id.endswith(digest), "the new pods run the digest just pushed"
    # The ReplicaSet's template names that exact image, not the moving `latest`.
    deployment = apps.read_namespaced_deployment(DEPLOYMENT, namespace)
    good_ref = f"{registry.host}/{repository}@{digest}"
    assert deployment.spec.template.spec.containers[0].image == good_ref

    # Version 3 crash-loops: the rollout fails fast with the pod's log, and is undone.
    write_context(tmp_path / "app", "three", CRASH)
    started = time.monotonic()
    third = pipeline("--undo-on-failure", "--timeout", "300")
    elapsed = time.monotonic() - started
    print(f"crash-looping pipeline: build, push, fail fast and undo in {elapsed:.0f} s")
    assert third.returncode == 1, third.stdout + third.stderr
    errors = [line for line in third.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in third.stdout + third.stderr
    assert len(errors) == 1, third.stderr  # warnings while waiting, then one error line
    assert third.stderr.rstrip().endswith(errors[0])
    assert "CrashLoopBackOff" in errors[0] and "rolled back to revision 2" in errors[0], errors
    assert "Raise --timeout" not in third.stderr
    assert "last log lines" in third.stdout and "fatal: DB_HOST is not set" in third.stdout
    assert elapsed < 200, f"the crash loop should fail fast, not wait the timeout ({elapsed:.0f} s)"
    broken = manifest_digest(api, repository, "latest")
    assert broken is not None and broken != digest  # `latest` now names the broken image

    # The undo holds: a pod replaced after it runs the good digest, not today's `latest`.
    core = client.CoreV1Api(kube_api)
    deployment = apps.read_namespaced_deployment(DEPLOYMENT, namespace)
    assert deployment.spec.template.spec.containers[0].image == good_ref
    wait_for_ready_pods(core, namespace, 2)
    victim = live_pods(core, namespace)[0].metadata.name
    core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
    replacements = wait_for_ready_pods(core, namespace, 2, without=victim)
    assert victim not in {p.metadata.name for p in replacements}
    for pod in replacements:
        assert pod.status.container_statuses[0].image_id.endswith(digest)


def live_pods(core: Any, namespace: str) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector="app=e2e-app").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def wait_for_ready_pods(core: Any, namespace: str, count: int, without: str = "") -> list[Any]:
    deadline = time.monotonic() + 120
    while True:
        pods = [p for p in live_pods(core, namespace) if p.metadata.name != without]
        ready = [
            p
            for p in pods
            if p.status.container_statuses and all(c.ready for c in p.status.container_statuses)
        ]
        if len(ready) == count == len(pods):
            return ready
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(ready)} of {count} pods ready after 120 s")
        time.sleep(1)
