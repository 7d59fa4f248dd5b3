"""The backup daemon's production image (k8s/backup-image/Dockerfile) on the lab's Docker
engine: built by the suite's own `image.build` FROM a PostgreSQL image without age, the
daemon's script (k8s/base/backup/backup.sh) in it writes an age-encrypted dump that our
identity opens, where the same script in the base image stops at start.

Stand-in, said so: the official `postgres:15` cannot be pulled here, so the base is the
lab's PostgreSQL image (Debian bookworm, postgresql-15, uid 999, the same entrypoint
variables) with Debian's age purged — a PostgreSQL image without age, as the official one
is. apt inside the build uses that image's sources (the host's), as the official image's
reach Debian's archive.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops import agecrypt
from ops.config import load_settings
from ops.images import build, plan_build
from tests.manifests.render import K8S
from tests.support.services import require

pytestmark = pytest.mark.integration

BACKUP_IMAGE = K8S / "backup-image"
SCRIPT = K8S / "base" / "backup" / "backup.sh"
MARKER = "Daemon-Image-Marker-Row-5150"


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    require(bool(os.environ.get("DOCKER_HOST")), "DOCKER_HOST is not set (run lab.py services-up)")
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as exc:
        require(False, f"no Docker engine at {os.environ.get('DOCKER_HOST')}: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def images(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``base``: a PostgreSQL image without age; ``daemon``: k8s/backup-image built on it."""
    import docker

    lab_postgres = os.environ.get("MANIFEST_TEST_POSTGRES_IMAGE", "")
    require(bool(lab_postgres), "MANIFEST_TEST_POSTGRES_IMAGE is not set (source the lab env)")
    try:
        engine.images.get(lab_postgres)
    except docker.errors.ImageNotFound:
        require(False, f"{lab_postgres} is not in the engine (run lab.py images)")
    suffix = uuid.uuid4().hex[:10]
    base = f"test/postgres-without-age:{suffix}"
    context = tmp_path_factory.mktemp("base")
    (context / "Dockerfile").write_text(
        f"FROM {lab_postgres}\nRUN dpkg --purge age && ! command -v age\n", encoding="utf-8"
    )
    engine.images.build(path=str(context), tag=base, rm=True, forcerm=True)
    env_file = context / "empty.env"
    env_file.touch()
    settings = load_settings(
        {
            "build_context": str(BACKUP_IMAGE),
            "base_image": base,
            "registry": "localhost:30002",
            "image_repository": f"test/postgres-backup-{suffix}",
        },
        env_file=env_file,
        environ={},
    )
    built = build(plan_build(settings))
    daemon = str(built.refs[0])
    try:
        yield {"base": base, "daemon": daemon}
    finally:
        for ref in (*(str(r) for r in built.refs), base):
            engine.images.remove(ref, force=True)


def put_files(container: Any, files: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    container.put_archive("/tmp", buffer.getvalue())


@pytest.fixture
def run_daemon_script(engine: Any) -> Iterator[Any]:
    """``run(image, recipient)``: PostgreSQL started in a container of ``image`` with a marker
    row, then `sh backup.sh once` as uid 999 with the recipient listed; returns (exit code,
    output, container)."""
    containers: list[Any] = []

    def run(image: str, recipient: str) -> tuple[int, str, Any]:
        password = secrets.token_urlsafe(12)
        container = engine.containers.run(
            image,
            detach=True,
            environment={"POSTGRES_PASSWORD": password, "POSTGRES_DB": "studentdb"},
        )
        containers.append(container)
        deadline = time.monotonic() + 120
        while container.exec_run(["pg_isready", "-h", "127.0.0.1", "-q"]).exit_code != 0:
            assert time.monotonic() < deadline, container.logs()[-2000:].decode()
            time.sleep(1)
        time.sleep(1)  # the entrypoint restarts the server once after initdb
        created = container.exec_run(
            [
                "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "studentdb", "-v",
                "ON_ERROR_STOP=1", "-c",
                "CREATE TABLE student (id serial PRIMARY KEY, name text, age int);"
                f"INSERT INTO student (name, age) VALUES ('{MARKER}', 30)",
            ],
            environment={"PGPASSWORD": password},
        )  # fmt: skip
        assert created.exit_code == 0, created.output.decode()
        put_files(
            container,
            {"backup.sh": SCRIPT.read_bytes(), "recipients.txt": f"{recipient}\n".encode()},
        )
        container.exec_run(["install", "-d", "-o", "999", "-g", "999", "/tmp/backups"])
        result = container.exec_run(
            ["sh", "/tmp/backup.sh", "once"],
            user="999",
            environment={
                "PGHOST": "127.0.0.1",
                "PGUSER": "postgres",
                "PGPASSWORD": password,
                "PGDATABASE": "studentdb",
                "BACKUP_DIR": "/tmp/backups",
                "BACKUP_RECIPIENTS_FILE": "/tmp/recipients.txt",
            },
        )
        return result.exit_code, result.output.decode(errors="replace"), container

    yield run
    for container in containers:
        container.remove(force=True)


def test_the_base_image_has_no_age_and_the_daemon_stops_at_start(
    images: dict[str, str], run_daemon_script: Any
) -> None:
    code, output, container = run_daemon_script(images["base"], agecrypt.generate().recipient)

    assert code == 2, output
    assert "this image has no age" in output
    assert container.exec_run(["ls", "/tmp/backups"]).output == b""  # nothing in the clear


def test_the_daemon_image_writes_a_dump_only_our_identity_opens(
    images: dict[str, str], run_daemon_script: Any, tmp_path: Path
) -> None:
    import pyrage

    pair = agecrypt.generate()

    code, output, container = run_daemon_script(images["daemon"], pair.recipient)

    assert code == 0, output
    assert " backup ok file=continuous-" in output and ".sql.age " in output, output
    listing = container.exec_run(["ls", "/tmp/backups"]).output.decode().split()
    (name,) = [n for n in listing if n.endswith(".sql.age")]
    data = container.exec_run(["cat", f"/tmp/backups/{name}"]).output
    assert agecrypt.is_encrypted(data) and MARKER.encode() not in data
    identity = tmp_path / "identity.txt"
    agecrypt.write_identity_file(identity, pair)
    plain = pyrage.decrypt(data, [i.key for i in agecrypt.read_identities(identity)])
    assert MARKER.encode() in plain and b"PostgreSQL database dump complete" in plain
    version = container.exec_run(["age", "--version"])
    assert version.exit_code == 0 and version.output.strip()
