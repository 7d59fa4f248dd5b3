"""The image: builds from the lab's local Python base, runs as uid 1000, serves the API.

Needs the lab's Docker engine (DOCKER_HOST) and base image (MANIFEST_TEST_PYTHON_IMAGE):
skipped without them on a laptop, failing under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from app_helpers import free_port

from tests.support.postgres import PostgresServer
from tests.support.services import host_ca_bundle, missing, require

if TYPE_CHECKING:
    import docker

pytestmark = pytest.mark.integration

APP_DIR = Path(__file__).resolve().parents[1]
BUILD_FILES = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "requirements.txt",
    "requirements-build.txt",
    "alembic.ini",
)
BUILD_DIRS = ("student_api", "alembic")


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    require(bool(os.environ.get("DOCKER_HOST")), "DOCKER_HOST not set (source the lab env)")
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        missing(f"Docker engine at {os.environ['DOCKER_HOST']} not reachable: {exc}")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def base_image(docker_client: docker.DockerClient) -> str:
    image = os.environ.get("MANIFEST_TEST_PYTHON_IMAGE", "")
    require(bool(image), "MANIFEST_TEST_PYTHON_IMAGE not set (source the lab env)")
    import docker

    try:
        docker_client.images.get(image)
    except docker.errors.ImageNotFound:
        missing(f"base image {image} is not in the engine (lab.py services-up makes it)")
    return image


def make_context(into: Path) -> Path:
    """The image's build context as ``inv image.build`` sends it (plus the host's CA)."""
    into.mkdir(parents=True, exist_ok=True)
    for name in BUILD_FILES:
        shutil.copy2(APP_DIR / name, into / name)
    for name in BUILD_DIRS:
        shutil.copytree(APP_DIR / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    ca = host_ca_bundle()
    if ca is not None:
        shutil.copy2(ca, into / "extra-ca.crt")
    return into


def build(docker_client: docker.DockerClient, context: Path, base_image: str) -> str:
    tag = f"manifest-app-test:{uuid.uuid4().hex[:10]}"
    import docker

    try:
        docker_client.images.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE_IMAGE": base_image},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
        pytest.fail(f"image build failed: {exc}\n{tail[-3000:]}")
    return tag


@pytest.fixture(scope="module")
def app_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_context(tmp_path_factory.mktemp("app-context") / "app")


@pytest.fixture(scope="module")
def app_image(
    docker_client: docker.DockerClient, base_image: str, app_context: Path
) -> Iterator[str]:
    tag = build(docker_client, app_context, base_image)
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


def locked_versions() -> dict[str, str]:
    """name -> version the lock pins for Linux on CPython 3.11 (markers evaluated)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    environment = {
        "sys_platform": "linux",
        "implementation_name": "cpython",
        "platform_system": "Linux",
        "python_version": "3.11",
    }
    pins: dict[str, str] = {}
    for line in (APP_DIR / "requirements.txt").read_text(encoding="utf-8").splitlines():
        if not line or line[0] in " #":
            continue
        requirement = Requirement(line.rstrip(" \\"))
        if requirement.marker is None or requirement.marker.evaluate(environment):
            (version,) = (spec.version for spec in requirement.specifier)
            pins[canonicalize_name(requirement.name)] = version
    return pins


def test_image_holds_exactly_the_locked_versions(
    docker_client: docker.DockerClient, app_image: str
) -> None:
    script = (
        "import importlib.metadata as m\n"
        "for d in m.distributions(): print(d.metadata['Name'], d.version)\n"
    )
    out = docker_client.containers.run(
        app_image, entrypoint=["python", "-c", script], remove=True
    ).decode()
    from packaging.utils import canonicalize_name

    installed = dict(line.split() for line in out.splitlines())
    installed = {canonicalize_name(name): version for name, version in installed.items()}

    assert installed.pop("student-api") == "0.1.0"
    assert installed == locked_versions()


def test_a_source_change_rebuilds_only_the_package_layer(
    docker_client: docker.DockerClient,
    base_image: str,
    app_image: str,
    app_context: Path,
    tmp_path: Path,
) -> None:
    changed = tmp_path / "app"
    shutil.copytree(app_context, changed)
    with (changed / "student_api" / "__init__.py").open("a", encoding="utf-8") as module:
        module.write(f"# a source-only change {uuid.uuid4().hex}\n")

    started = time.monotonic()
    tag = build(docker_client, changed, base_image)
    took = time.monotonic() - started
    try:
        before = docker_client.images.get(app_image).attrs["RootFS"]["Layers"]
        after = docker_client.images.get(tag).attrs["RootFS"]["Layers"]
    finally:
        docker_client.images.remove(tag, force=True)

    # Same base, same dependency layer, same migrations; only the package's layer is new.
    assert after[:-1] == before[:-1]
    assert after[-1] != before[-1]
    print(f"source-only rebuild: {took:.1f} s")


def test_image_runs_as_uid_1000_on_8080_without_build_tools(
    docker_client: docker.DockerClient, app_image: str
) -> None:
    config: dict[str, Any] = docker_client.images.get(app_image).attrs["Config"]
    script = (
        "id -u; for tool in gcc cc make c++ /opt/venv/bin/pip; do "
        "command -v $tool >/dev/null && echo found $tool; done; "
        "test -e /src && echo found /src; echo end"
    )
    probe = docker_client.containers.run(
        app_image, entrypoint=["sh", "-c", script], remove=True
    ).decode()

    assert config["User"] == "1000:1000"
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"] == ["student-api"]
    # No compiler, no pip in the app's venv, and the build stage's sources stayed behind.
    assert probe.split() == ["1000", "end"], probe


def test_container_serves_the_api_against_the_test_database(
    docker_client: docker.DockerClient,
    app_image: str,
    postgres_server: PostgresServer,
    fresh_database: str,
) -> None:
    port = free_port()
    # The fixture's PostgreSQL listens on 127.0.0.1 only: share the host's network.
    container = docker_client.containers.run(
        app_image,
        detach=True,
        network_mode="host",
        # As the Deployment runs it: read-only root filesystem, no capabilities.
        read_only=True,
        cap_drop=["ALL"],
        environment={
            "DB_HOST": postgres_server.host,
            "DB_PORT": str(postgres_server.port),
            "DB_NAME": fresh_database,
            "DB_USER": postgres_server.superuser,
            "DB_PASSWORD": postgres_server.password,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "SHUTDOWN_DELAY": "0",
        },
    )
    try:
        fetch = (
            "import json, sys, urllib.request as u\n"
            "base = 'http://127.0.0.1:' + sys.argv[1]\n"
            "req = u.Request(base + '/api/student', method='POST',\n"
            "    data=json.dumps({'name': 'Max', 'age': 25}).encode(),\n"
            "    headers={'content-type': 'application/json'})\n"
            "u.urlopen(req)\n"
            "print(u.urlopen(base + '/api/student').read().decode())\n"
        )
        deadline = time.monotonic() + 60
        while True:
            container.reload()
            assert container.status == "running", container.logs().decode()[-2000:]
            result = container.exec_run(
                [
                    "python3",
                    "-c",
                    "import sys, urllib.request as u; "
                    "u.urlopen('http://127.0.0.1:' + sys.argv[1] + '/health/startup')",
                    str(port),
                ]
            )
            if result.exit_code == 0:
                break
            assert time.monotonic() < deadline, container.logs().decode()[-2000:]
            time.sleep(0.5)

        answer = container.exec_run(["python3", "-c", fetch, str(port)])

        assert answer.exit_code == 0, answer.output.decode()
        students = json.loads(answer.output.decode())
        assert [(s["name"], s["age"]) for s in students] == [("Max", 25)]
        container.stop(timeout=30)
        container.reload()
        logs = container.logs().decode()
        assert "migrations: applied, database now at revision 0001" in logs
        assert "Application shutdown complete" in logs
        assert postgres_server.password not in logs
    finally:
        container.remove(force=True)
