"""`inv image.*` / `inv pipeline` as a user runs them: bad input is one red line, no traceback.

Each case runs `inv` in a subprocess against the lab's real Docker engine and registry.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.inv import clean_env
from tests.support.inv import run_inv as inv
from tests.support.services import require

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")


def run_inv(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return inv(*args, env=env, cwd=cwd, timeout=300)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single non-empty stderr line of a failed task; asserts there is no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with an app/ build context (static busybox, FROM scratch) and an empty .env."""
    require(BUSYBOX.is_file(), "no /bin/busybox (apt-get install busybox-static)")
    context = tmp_path / "app"
    context.mkdir()
    shutil.copy2(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nCMD ["sh"]\n',
        encoding="utf-8",
    )
    (context / "Dockerfile.failing").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "RUN echo output-of-the-failing-step && exit 3\n",
        encoding="utf-8",
    )
    (tmp_path / ".env").touch()
    return tmp_path


@pytest.fixture
def lab_env(work: Path) -> Iterator[dict[str, str]]:
    """The environment a user of the lab has: engine, registry and its credentials."""
    for name in ("DOCKER_HOST", "MANIFEST_TEST_REGISTRY", "MANIFEST_TEST_REGISTRY_PASSWORD_FILE"):
        require(bool(os.environ.get(name)), f"{name} is not set (run lab.py services-up)")
    repository = f"test/tasks-{uuid.uuid4().hex[:10]}"
    env = clean_env()
    env.update(
        COLUMNS="200",
        MANIFEST_REGISTRY=os.environ["MANIFEST_TEST_REGISTRY"],
        MANIFEST_IMAGE_REPOSITORY=repository,
        MANIFEST_REGISTRY_USERNAME=os.environ.get("MANIFEST_TEST_REGISTRY_USER", ""),
        MANIFEST_REGISTRY_PASSWORD=Path(os.environ["MANIFEST_TEST_REGISTRY_PASSWORD_FILE"])
        .read_text(encoding="utf-8")
        .strip(),
        MANIFEST_REGISTRY_CA_FILE=os.environ.get("MANIFEST_TEST_REGISTRY_CA", ""),
    )
    yield env
    import docker

    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return
    for image in client.images.list():
        for tag in image.tags:
            if f"/{repository}:" in tag:
                client.images.remove(tag, force=True)
    client.close()


def test_missing_dockerfile(lab_env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-the-repo"
    (elsewhere / "app").mkdir(parents=True)
    line = one_error_line(run_inv("image.build", env=lab_env, cwd=elsewhere))
    assert "no Dockerfile at app/Dockerfile" in line and "--dockerfile" in line


def test_stopped_engine(lab_env: dict[str, str], work: Path) -> None:
    env = {**lab_env, "DOCKER_HOST": f"unix://{work}/no-engine.sock"}
    line = one_error_line(run_inv("image.build", env=env, cwd=work))
    assert "Docker engine is not reachable" in line and "no-engine.sock" in line


def test_failing_step_shows_its_output_then_one_line(lab_env: dict[str, str], work: Path) -> None:
    result = run_inv("image.build", "--dockerfile", "Dockerfile.failing", env=lab_env, cwd=work)
    line = one_error_line(result)
    assert "step 4/" in line and "failed: exit code 3" in line
    assert "output-of-the-failing-step" in result.stdout  # the step's own output is shown


def test_wrong_password(lab_env: dict[str, str], work: Path) -> None:
    built = run_inv("image.build", "--tag", "extra-one", env=lab_env, cwd=work)
    assert built.returncode == 0, built.stderr
    assert "Step 1/" in built.stdout and ":extra-one" in built.stdout
    env = {**lab_env, "MANIFEST_REGISTRY_PASSWORD": "wrong-password-value"}
    result = run_inv("image.push", env=env, cwd=work)
    line = one_error_line(result)
    assert "push of" in line and "refused the login of 'manifest-ci'" in line
    assert "wrong-password-value" not in result.stdout + result.stderr
    # refused before the engine began: no "pushing …" heading (it is printed, and rich
    # loaded for it, once the engine is pushing)
    assert result.stdout == ""


def test_unreachable_registry(lab_env: dict[str, str], work: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**lab_env, "MANIFEST_REGISTRY": f"localhost:{port}"}
    line = one_error_line(run_inv("pipeline", "--no-rollout", env=env, cwd=work))
    assert f"registry localhost:{port} is unreachable (connection refused)" in line


def test_pipeline_without_rollout_pushes_both_tags(lab_env: dict[str, str], work: Path) -> None:
    from ops.registry import Registry, manifest_digest
    from tests.support.registry import list_tags

    result = run_inv("pipeline", "--no-rollout", env=lab_env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert lab_env["MANIFEST_REGISTRY_PASSWORD"] not in result.stdout + result.stderr
    registry = Registry(
        host=lab_env["MANIFEST_REGISTRY"],
        username=lab_env["MANIFEST_REGISTRY_USERNAME"],
        password=lab_env["MANIFEST_REGISTRY_PASSWORD"],
        ca_file=Path(lab_env["MANIFEST_REGISTRY_CA_FILE"])
        if lab_env["MANIFEST_REGISTRY_CA_FILE"]
        else None,
    )
    repository = lab_env["MANIFEST_IMAGE_REPOSITORY"]
    tags = list_tags(registry, repository)
    assert "latest" in tags and len(tags) == 2
    assert len({manifest_digest(registry, repository, t) for t in tags}) == 1


def test_dry_run_touches_nothing(lab_env: dict[str, str], work: Path) -> None:
    # No engine at all: a dry run must not need one.
    env = {**lab_env, "DOCKER_HOST": f"unix://{work}/no-engine.sock"}
    result = run_inv("pipeline", "--dry-run", "--no-rollout", "--tag", "rc1", env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert "pipeline would:" in result.stdout
    assert "latest, v1-" in result.stdout and "rc1" in result.stdout
    assert lab_env["MANIFEST_REGISTRY_PASSWORD"] not in result.stdout + result.stderr


# --- the registry's error matrix (the engine is real; the registry is the peer under test) ---

REGISTRY_WORDS = {
    "closed port": "unreachable (connection refused)",
    "never answers": "unreachable (timed out)",
    "wrong CA": "TLS verification failed",
    "401": "push of",
    "403": "push of",
    "404": "HTTP 404",
    "409": "HTTP 409",
    "500": "HTTP 500",
}


@pytest.mark.parametrize("peer", REGISTRY_WORDS, ids=REGISTRY_WORDS)
def test_push_against_a_failing_registry(
    peer: str, lab_env: dict[str, str], work: Path, tmp_path: Path
) -> None:
    """A closed port, a silent listener, an untrusted certificate and the statuses a real
    registry will not give on demand (tests/fakes/http_server.py, a fake): one line, exit 1,
    in seconds, the same exit code with --debug."""
    import time
    from contextlib import ExitStack

    from tests.fakes.http_server import closed_port, fake_http, silent_listener

    built = run_inv("image.build", env=lab_env, cwd=work)
    assert built.returncode == 0, built.stderr
    with ExitStack() as stack:
        if peer == "closed port":
            port = closed_port()
        elif peer == "never answers":
            port = stack.enter_context(silent_listener())
        elif peer == "wrong CA":
            port = stack.enter_context(fake_http(200, tls_dir=tmp_path))
        else:
            port = stack.enter_context(fake_http(int(peer)))
        # the image is tagged for the lab's registry; push it under the fake's name too
        env = {**lab_env, "MANIFEST_REGISTRY": f"localhost:{port}", "MANIFEST_REGISTRY_CA_FILE": ""}
        retag = run_inv("image.build", env=env, cwd=work)
        assert retag.returncode == 0, retag.stderr
        started = time.monotonic()
        result = run_inv("image.push", env=env, cwd=work)
        seconds = time.monotonic() - started
        line = one_error_line(result)
        assert REGISTRY_WORDS[peer] in line, line
        assert result.returncode == 1 and "unexpected" not in line
        assert seconds < 60, f"{seconds:.0f} s"
        debug = run_inv("--debug", "image.push", env=env, cwd=work)
        assert debug.returncode == 1 and "Traceback" in debug.stderr
