"""Build and push against the lab's real Docker engine and registry (TLS + htpasswd).

The lab (`python3 lab/lab.py services-up`) writes DOCKER_HOST and MANIFEST_TEST_REGISTRY*
to /tmp/manifest-lab/env; without them these tests skip (and fail under CI=true).
Images are built FROM scratch with Debian's static busybox: nothing is pulled.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import socketserver
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from ops.config import Settings, load_settings
from ops.errors import BuildError, ConfigError, EngineUnavailable, PushError, RegistryError
from ops.images import BuildPlan, build, engine, negotiated_version, plan_build, push
from ops.registry import Registry, check, manifest_digest
from tests.support.registry import list_tags
from tests.support.services import require

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")
GOOD_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo built > /built.txt
CMD ["sh", "-c", "cat /built.txt"]
"""
FAILING_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN echo marker-before-failure && ls /no/such/path
CMD ["sh"]
"""


def engine_reachable() -> bool:
    import docker

    try:
        client = docker.from_env(timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except docker.errors.DockerException:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def lab_registry() -> Registry:
    """The lab's registry with the right credentials."""
    require(bool(os.environ.get("DOCKER_HOST")), "DOCKER_HOST is not set (run lab.py services-up)")
    require(engine_reachable(), f"no Docker engine at {os.environ.get('DOCKER_HOST')}")
    host = os.environ.get("MANIFEST_TEST_REGISTRY", "")
    password_file = os.environ.get("MANIFEST_TEST_REGISTRY_PASSWORD_FILE", "")
    require(bool(host and password_file), "MANIFEST_TEST_REGISTRY(_PASSWORD_FILE) not set")
    ca = os.environ.get("MANIFEST_TEST_REGISTRY_CA")
    registry = Registry(
        host=host,
        username=os.environ.get("MANIFEST_TEST_REGISTRY_USER", ""),
        password=Path(password_file).read_text(encoding="utf-8").strip(),
        ca_file=Path(ca) if ca else None,
    )
    try:
        result = check(registry)
    except RegistryError as error:
        require(False, f"lab registry unreachable: {error}")
    assert result.login == "accepted", "the lab's registry refused the lab's own credentials"
    return registry


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    require(BUSYBOX.is_file(), "no /bin/busybox (apt-get install busybox-static)")
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy2(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(GOOD_DOCKERFILE, encoding="utf-8")
    (context / "Dockerfile.failing").write_text(FAILING_DOCKERFILE, encoding="utf-8")
    return context


def settings_for_test(tmp_path: Path, **overrides: object) -> Settings:
    """Settings from defaults and the given values only: no user .env, no MANIFEST_* env."""
    env_file = tmp_path / "empty.env"
    env_file.touch()
    return load_settings(overrides, env_file=env_file, environ={})


@pytest.fixture
def repository() -> Iterator[str]:
    """A repository name no other test run uses; its local images are removed afterwards."""
    name = f"test/images-{uuid.uuid4().hex[:10]}"
    yield name
    if os.environ.get("DOCKER_HOST"):
        import docker

        client = docker.from_env()
        for image in client.images.list():
            for tag in image.tags:
                if f"/{name}:" in tag or f"/{name}-base:" in tag:
                    client.images.remove(tag, force=True)
        client.close()


def make_plan(
    tmp_path: Path, context: Path, registry: Registry, repository: str, **extra: object
) -> BuildPlan:
    settings = settings_for_test(
        tmp_path,
        registry=registry.host,
        image_repository=repository,
        build_context=context,
        **extra,
    )
    return plan_build(settings, extra_tags=["e2e-extra"])


def test_build_and_push_both_tags_with_one_digest(
    tmp_path: Path, build_dir: Path, lab_registry: Registry, repository: str
) -> None:
    subprocess.run(["git", "init", "-q"], cwd=build_dir, check=True)
    subprocess.run(["git", "add", "."], cwd=build_dir, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "x"],
        cwd=build_dir,
        check=True,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=build_dir, capture_output=True, text=True, check=True
    ).stdout.strip()
    plan = make_plan(tmp_path, build_dir, lab_registry, repository)
    steps: list[int] = []
    built = build(plan, on_step=lambda s: steps.append(s.number))
    assert steps[:5] == [1, 2, 3, 4, 5]  # each step reported live, in order

    import docker

    client = docker.from_env()
    image = client.images.get(str(plan.refs[0]))
    client.close()
    assert image.id == built.image_id
    assert {str(r) for r in plan.refs} <= set(image.tags)
    assert image.labels["org.opencontainers.image.revision"] == commit
    assert image.labels["org.opencontainers.image.created"].endswith("Z")

    layers: list[tuple[str, str]] = []
    pushed = push(
        plan.refs, lab_registry, on_layer=lambda ref, p: layers.append((ref.tag, p.status))
    )
    assert any(
        s in ("Pushed", "Layer already exists") or s.startswith("Mounted") for _, s in layers
    )
    # Only the first tag goes through the engine; the others are the same manifest, told to
    # the registry under each tag (the engine would check every layer once more per tag).
    assert {tag for tag, _ in layers} == {"latest"}

    tags = list_tags(lab_registry, repository)
    assert {"latest", plan.refs[1].tag, "e2e-extra"} <= set(tags)
    assert plan.refs[1].tag.startswith("v1-")
    digests = {manifest_digest(lab_registry, repository, r.tag) for r in plan.refs}
    assert len(digests) == 1 and None not in digests  # both tags: the SAME manifest
    assert digests == {p.digest for p in pushed}


def test_labels_go_through_a_dockerfile_that_declares_their_args_in_one_step(
    tmp_path: Path, build_dir: Path, lab_registry: Registry, repository: str
) -> None:
    """Labels through the API were one build step each (a container made and committed)."""
    (build_dir / "Dockerfile.labelled").write_text(
        GOOD_DOCKERFILE.replace(
            "COPY busybox", "ARG OCI_CREATED OCI_TITLE OCI_VERSION OCI_REVISION\nCOPY busybox"
        )
        + "LABEL org.opencontainers.image.created=$OCI_CREATED"
        " org.opencontainers.image.title=$OCI_TITLE"
        " org.opencontainers.image.version=$OCI_VERSION\n",
        encoding="utf-8",
    )
    plan = make_plan(
        tmp_path, build_dir, lab_registry, repository, dockerfile="Dockerfile.labelled"
    )
    built = build(plan)
    assert built.steps == 7  # the Dockerfile's own: no step added per label

    import docker

    client = docker.from_env()
    image = client.images.get(built.image_id)
    client.close()
    for key in ("created", "title", "version"):
        name = f"org.opencontainers.image.{key}"
        assert image.labels[name] == plan.labels[name]
    assert image.labels["org.opencontainers.image.title"] == repository


def test_a_version_tag_already_pushed_for_another_image_is_never_moved(
    tmp_path: Path, build_dir: Path, lab_registry: Registry, repository: str
) -> None:
    """Seen: two pushes in the same minute moved v1-...-HHMM from a good image to a broken one."""
    from datetime import UTC, datetime

    from ops.images import push as push_refs

    minute = datetime(2026, 11, 30, 11, 42, 7, tzinfo=UTC)
    settings = settings_for_test(
        tmp_path, registry=lab_registry.host, image_repository=repository, build_context=build_dir
    )
    first = plan_build(settings, now=minute)
    build(first)
    good = push_refs(first.refs, lab_registry)
    (build_dir / "Dockerfile").write_text(
        GOOD_DOCKERFILE.replace("echo built", "echo broken"), encoding="utf-8"
    )
    second = plan_build(settings, now=minute.replace(second=51))
    assert [r.tag for r in second.refs] == [r.tag for r in first.refs]  # the same minute
    build(second)
    broken = push_refs(second.refs, lab_registry)

    assert good[0].digest != broken[0].digest
    assert manifest_digest(lab_registry, repository, "v1-20261130-1142") == good[0].digest
    assert manifest_digest(lab_registry, repository, "v1-20261130-1142-2") == broken[0].digest
    assert manifest_digest(lab_registry, repository, "latest") == broken[0].digest
    assert (broken[1].ref.tag, broken[1].instead_of) == ("v1-20261130-1142-2", "v1-20261130-1142")
    # Pushing the same image again keeps its tag: nothing new is made.
    again = push_refs(second.refs, lab_registry)
    assert again[1].ref.tag == "v1-20261130-1142-2"
    assert sorted(list_tags(lab_registry, repository)) == [
        "latest",
        "v1-20261130-1142",
        "v1-20261130-1142-2",
    ]


def test_wrong_password_is_a_push_error(
    tmp_path: Path, build_dir: Path, lab_registry: Registry, repository: str
) -> None:
    plan = make_plan(tmp_path, build_dir, lab_registry, repository)
    build(plan)
    wrong = Registry(
        host=lab_registry.host,
        username=lab_registry.username,
        password="not-the-password",
        ca_file=lab_registry.ca_file,
    )
    with pytest.raises(PushError) as caught:
        push(plan.refs[:1], wrong)
    message = str(caught.value)
    assert "\n" not in message
    assert f"push of {plan.refs[0]} failed" in message
    assert f"refused the login of {lab_registry.username!r}" in message
    assert "credentials" in caught.value.hint
    assert "not-the-password" not in message + caught.value.hint
    assert list_tags(lab_registry, repository) == []  # nothing arrived


def test_failing_run_is_a_build_error_with_that_steps_output(
    tmp_path: Path, build_dir: Path, lab_registry: Registry, repository: str
) -> None:
    plan = make_plan(tmp_path, build_dir, lab_registry, repository, dockerfile="Dockerfile.failing")
    with pytest.raises(BuildError) as caught:
        build(plan)
    message = str(caught.value)
    assert message.startswith("step 4/")
    assert "RUN echo marker-before-failure" in message
    assert message.endswith("failed: exit code 1")
    output = caught.value.context["output"]
    assert isinstance(output, list)
    assert "marker-before-failure" in output
    assert any("/no/such/path" in line for line in output)


def test_missing_dockerfile_is_one_config_line(tmp_path: Path, build_dir: Path) -> None:
    settings = settings_for_test(tmp_path, build_context=build_dir, dockerfile="Nope.Dockerfile")
    with pytest.raises(ConfigError) as caught:
        plan_build(settings)
    assert "no Dockerfile at" in str(caught.value) and "Nope.Dockerfile" in str(caught.value)
    assert "--dockerfile" in caught.value.hint


def test_stopped_engine_is_one_line(
    tmp_path: Path, build_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_path = tmp_path / "no-engine.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    settings = settings_for_test(tmp_path, build_context=build_dir)
    with pytest.raises(EngineUnavailable) as caught:
        build(plan_build(settings))
    message = str(caught.value)
    assert "\n" not in message
    assert str(socket_path) in message and "no engine listens there" in message


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_registry_is_one_line(
    tmp_path: Path, build_dir: Path, lab_registry: Registry, repository: str
) -> None:
    plan = make_plan(tmp_path, build_dir, lab_registry, repository)
    build(plan)
    nowhere = Registry(host=f"localhost:{closed_port()}", username="u", password="p")
    with pytest.raises(RegistryError) as caught:
        push(plan.refs, nowhere)
    assert str(caught.value) == f"registry {nowhere.host} is unreachable (connection refused)"


def test_base_image_from_the_registry_is_pulled_with_the_settings_login(
    tmp_path: Path, build_dir: Path, lab_registry: Registry, repository: str
) -> None:
    import docker

    base_plan = make_plan(tmp_path, build_dir, lab_registry, f"{repository}-base")
    build(base_plan)
    push(base_plan.refs[:1], lab_registry)
    base = str(base_plan.refs[0])
    client = docker.from_env()
    client.images.remove(base, force=True)  # so the build must pull it from the registry
    for ref in base_plan.refs[1:]:
        client.images.remove(str(ref), force=True)
    client.close()
    (build_dir / "Dockerfile.on-base").write_text(
        "ARG BASE_IMAGE=scratch\nFROM ${BASE_IMAGE}\nRUN cat /built.txt\n", encoding="utf-8"
    )
    plan = make_plan(
        tmp_path,
        build_dir,
        lab_registry,
        repository,
        dockerfile="Dockerfile.on-base",
        base_image=base,
    )
    if not (Path.home() / ".docker" / "config.json").exists():  # no other login to fall back on
        with pytest.raises(BuildError, match=r"step 2/\d+ \(FROM .*\) failed: "):
            build(plan)
    output: list[str] = []
    built = build(plan, on_output=output.append, registry=lab_registry)
    assert built.image_id.startswith("sha256:")
    assert "built" in output  # the RUN step ran on the pulled base image


class _RecordingProxy(socketserver.ThreadingUnixStreamServer):
    daemon_threads = False  # server_close() joins every connection's thread
    upstream: str
    seen: list[str]


class _Relay(socketserver.BaseRequestHandler):
    server: _RecordingProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as engine_side:
            engine_side.connect(self.server.upstream)
            answers = threading.Thread(target=self._pump, args=(engine_side, client, False))
            answers.start()
            self._pump(client, engine_side, True)
            answers.join()

    def _pump(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                if record:
                    self.server.seen.extend(
                        " ".join(line.split()[:2])
                        for line in data.decode("latin-1").split("\r\n")
                        if re.match(r"^(GET|POST|PUT|HEAD|DELETE) /", line)
                    )
                target.sendall(data)
        with suppress(OSError):
            target.shutdown(socket.SHUT_WR)


@contextmanager
def recording_proxy(upstream: str, folder: Path) -> Iterator[tuple[str, list[str]]]:
    """A unix socket in ``folder`` passing every byte to and from the socket ``upstream``,
    recording each HTTP request line the client sends (``GET /_ping``).

    Every thread it starts has ended when it returns. Its first version closed the listening
    socket under a thread still in ``accept()``: a CI run later saw that thread accept a
    fake exec server's connection (the kernel had given the freed descriptor number to the
    fake's listening socket) and relay it to the Docker engine, which answered the exec
    handshake with its own 404. socketserver's ``shutdown()`` waits for the accept loop.
    """
    path = folder / "recorded.sock"
    server = _RecordingProxy(str(path), _Relay)
    server.upstream, server.seen = upstream, []
    loop = threading.Thread(target=server.serve_forever, name="recording-proxy")
    loop.start()
    try:
        yield f"unix://{path}", server.seen
    finally:
        server.shutdown()
        loop.join()
        server.server_close()


def test_the_recording_proxy_leaves_no_thread_and_no_listener_behind(tmp_path: Path) -> None:
    """Seen in CI: its accept thread outlived it and took a later test's connection."""
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.bind(str(tmp_path / "upstream.sock"))
    upstream.listen()

    def answer_once() -> None:
        conn, _ = upstream.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")

    answering = threading.Thread(target=answer_once)
    answering.start()
    before = set(threading.enumerate())
    with (
        recording_proxy(str(tmp_path / "upstream.sock"), tmp_path) as (address, seen),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client,
    ):
        client.connect(address.removeprefix("unix://"))
        client.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        client.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: client.recv(65536), b""))
    answering.join()
    upstream.close()

    assert reply.endswith(b"ok") and seen == ["GET /_ping"]
    assert set(threading.enumerate()) - before == set()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as late, pytest.raises(OSError):
        late.connect(address.removeprefix("unix://"))


def test_the_engine_api_version_comes_from_the_ping(
    lab_registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No `GET /version` (the engine collects runc's, containerd's and docker-init's versions
    for it): the version is the ping's Api-Version, as the Docker CLI negotiates it."""
    upstream = os.environ["DOCKER_HOST"].removeprefix("unix://")
    with recording_proxy(upstream, tmp_path) as (address, seen):
        monkeypatch.setenv("DOCKER_HOST", address)
        with engine() as client:
            spoken = client.api.api_version
            engine_api = client.version()["ApiVersion"]  # asked here, by the test only
    assert seen[0] == "GET /_ping"
    # only the test's own question, in the version spoken
    assert [r for r in seen if r.endswith("/version")] == [f"GET /v{spoken}/version"]
    assert spoken == negotiated_version(engine_api)
    assert spoken is not None and spoken.startswith("1.")
