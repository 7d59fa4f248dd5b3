"""Fixtures for tests against the lab's Kubernetes cluster (lab/lab.py cluster-up).

The cluster is found through KUBECONFIG and the context manifest-lab
(MANIFEST_TEST_KUBE_CONTEXT); the registry through MANIFEST_TEST_REGISTRY,
MANIFEST_TEST_REGISTRY_USER and MANIFEST_TEST_REGISTRY_PASSWORD_FILE, all
written to $MANIFEST_LAB_DIR/env by the lab. Without them a test is skipped
on a laptop and fails under CI (CI=true).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import missing

DEFAULT_CONTEXT = "manifest-lab"
PULL_SECRET = "harbor-regcred"
ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "app"
APP_REPOSITORY = "localhost:30002/studenten/manifest-app"


@dataclass(frozen=True, kw_only=True)
class Registry:
    """The lab's registry (localhost:30002) and its credentials."""

    host: str
    user: str
    password: str
    ca: Path | None

    def auth_config(self) -> dict[str, str]:
        return {"username": self.user, "password": self.password}

    def dockerconfigjson(self) -> str:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        auth = {"username": self.user, "password": self.password, "auth": token}
        return json.dumps({"auths": {self.host: auth}})


@pytest.fixture(scope="session")
def kube_context() -> str:
    return os.environ.get("MANIFEST_TEST_KUBE_CONTEXT", DEFAULT_CONTEXT)


@pytest.fixture(scope="session")
def kube_api(kube_context: str) -> Iterator[Any]:
    """A kubernetes.client.ApiClient for the lab context, checked to answer."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig or not Path(kubeconfig.split(os.pathsep)[0]).exists():
        missing("KUBECONFIG is not set or missing (run `python3 lab/lab.py up`)")
    from kubernetes import client, config

    try:
        contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
    except Exception as exc:  # an unreadable kubeconfig means "no cluster"
        missing(f"cannot read KUBECONFIG {kubeconfig}: {exc}")
    if kube_context not in {c["name"] for c in contexts}:
        missing(f"context {kube_context!r} is not in {kubeconfig}")
    api = config.new_client_from_config(config_file=kubeconfig, context=kube_context)
    try:
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:
        api.close()
        missing(f"the cluster of context {kube_context!r} does not answer: {exc}")
    yield api
    api.close()


@pytest.fixture(scope="session")
def core_v1(kube_api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(kube_api)


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


@pytest.fixture
def namespace(core_v1: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deleted afterwards."""
    from kubernetes import client

    name = f"e2e-{_slug(request.node.name, 40)}-{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"manifest.test/e2e": "true"})
        )
    )
    # Pods need the namespace's default ServiceAccount, made by a controller.
    wait_until(
        lambda: any(
            sa.metadata.name == "default"
            for sa in core_v1.list_namespaced_service_account(name).items
        ),
        timeout=30,
        what=f"ServiceAccount default in {name}",
    )
    yield name
    core_v1.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)


@pytest.fixture(scope="session")
def registry() -> Registry:
    host = os.environ.get("MANIFEST_TEST_REGISTRY")
    user = os.environ.get("MANIFEST_TEST_REGISTRY_USER")
    password_file = os.environ.get("MANIFEST_TEST_REGISTRY_PASSWORD_FILE")
    if not (host and user and password_file and Path(password_file).exists()):
        missing(
            "MANIFEST_TEST_REGISTRY, _USER and _PASSWORD_FILE are not set"
            " (source $MANIFEST_LAB_DIR/env)"
        )
    ca = os.environ.get("MANIFEST_TEST_REGISTRY_CA")
    return Registry(
        host=host,
        user=user,
        password=Path(password_file).read_text().strip(),
        ca=Path(ca) if ca else None,
    )


@pytest.fixture
def harbor_regcred(core_v1: Any, namespace: str, registry: Registry) -> str:
    """The pull secret harbor-regcred (kubernetes.io/dockerconfigjson) in `namespace`."""
    from kubernetes import client

    core_v1.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=PULL_SECRET),
            type="kubernetes.io/dockerconfigjson",
            string_data={".dockerconfigjson": registry.dockerconfigjson()},
        ),
    )
    return PULL_SECRET


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A docker SDK client for the lab's engine (DOCKER_HOST)."""
    if not os.environ.get("DOCKER_HOST"):
        missing("DOCKER_HOST is not set (source $MANIFEST_LAB_DIR/env)")
    import docker

    try:
        engine = docker.from_env()
        engine.ping()
    except Exception as exc:
        missing(f"the Docker engine at {os.environ['DOCKER_HOST']} does not answer: {exc}")
    yield engine
    engine.close()


def copy_app_context(folder: Path) -> Path:
    """app/ without its tests, plus the host's CA bundle for pip behind a TLS proxy."""
    import shutil

    from tests.support.services import host_ca_bundle

    if not (APP_DIR / "Dockerfile").is_file():
        missing("app/Dockerfile is missing")
    for entry in APP_DIR.iterdir():
        if entry.name in ("tests", "__pycache__") or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(
                entry, folder / entry.name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(entry, folder / entry.name)
    ca = host_ca_bundle()
    if ca is not None:
        shutil.copy2(ca, folder / "extra-ca.crt")
    return folder


@pytest.fixture(scope="session")
def app_image(
    docker_client: Any, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The app built from app/ on the lab's Python image, pushed under a tag of its own
    (once per session: several modules deploy it)."""
    base = os.environ.get("MANIFEST_TEST_PYTHON_IMAGE", "")
    if not base:
        missing("MANIFEST_TEST_PYTHON_IMAGE not set (source the lab env)")
    context = copy_app_context(tmp_path_factory.mktemp("app-context"))
    tag = f"e2e-{uuid.uuid4().hex[:10]}"
    image = f"{APP_REPOSITORY}:{tag}"
    started = time.monotonic()
    docker_client.images.build(
        path=str(context), tag=image, buildargs={"BASE_IMAGE": base}, rm=True, forcerm=True
    )
    built = time.monotonic()
    errors = [
        chunk["error"]
        for chunk in docker_client.api.push(
            APP_REPOSITORY, tag=tag, stream=True, decode=True, auth_config=registry.auth_config()
        )
        if "error" in chunk
    ]
    assert errors == [], errors
    pushed = time.monotonic()
    print(f"app image {image}: built in {built - started:.0f} s, pushed in {pushed - built:.0f} s")
    try:
        yield image
    finally:
        docker_client.images.remove(image, force=True)


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
