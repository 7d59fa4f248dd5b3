"""Every task that talks to a peer, against every way the peer can fail: one line, fast.

Peers here: the Kubernetes API and the Docker engine, each at a closed port, a listener
that never answers, a TLS server whose CA we do not trust, and (the API) HTTP 401, 403,
404, 409 and 500 from ``tests/fakes/http_server.py`` (a fake: a real API server cannot be
made to answer a read with 409 or 500). The registry's matrix is in
tests/integration/test_error_matrix_registry.py (it needs a real engine in front of it).
Each case asserts: the documented exit code, one ``error:`` line, no traceback, no
``unexpected`` line, a time bound, and the same exit code with ``inv --debug``.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.fakes.http_server import closed_port, fake_http, self_signed, silent_listener
from tests.support.inv import clean_env
from tests.support.inv import run_inv as inv

ROOT = Path(__file__).resolve().parents[2]
TIME_BOUND = 30.0  # seconds for one task run, silent peer included (read timeout 10 s)

KUBE_TASKS = {
    "rollout.status": ["rollout.status"],
    "rollout.restart": ["rollout.restart"],
    "secrets.check": ["secrets.check"],
    "backup.now": ["backup.now"],
    "backup.list": ["backup.list"],
}
STATUS_WORDS = {
    401: "refused to read",
    403: "refused to read",
    404: "not found",
    409: "conflict on",
    500: "HTTP 500",
}


def kubeconfig(path: Path, server: str, ca: Path | None = None) -> Path:
    cluster: str = f"    server: {server}\n"
    if ca is not None:
        data = base64.b64encode(ca.read_bytes()).decode()
        cluster += f"    certificate-authority-data: {data}\n"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: manifest-lab\n"
        f"clusters:\n- name: lab\n  cluster:\n{cluster}"
        "users:\n- name: u\n  user:\n    token: not-a-real-token\n"
        "contexts:\n- name: manifest-lab\n  context:\n    cluster: lab\n    user: u\n",
        encoding="utf-8",
    )
    return path


def run_inv(
    args: list[str], *, cwd: Path, debug: bool = False, **environ: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = clean_env(without=("DOCKER_",))
    env.update(COLUMNS="200", **environ)
    started = time.monotonic()
    done = inv(*(["--debug"] if debug else []), *args, env=env, cwd=cwd, timeout=120)
    return done, time.monotonic() - started


def assert_one_line(
    args: list[str], *, cwd: Path, code: int, words: str, debug: bool = True, **environ: str
) -> None:
    # The --debug run goes beside the plain one (a silent peer's wait is paid once).
    with ThreadPoolExecutor(max_workers=2) as pool:
        plain = pool.submit(run_inv, args, cwd=cwd, **environ)
        traced = pool.submit(run_inv, args, cwd=cwd, debug=True, **environ) if debug else None
        result, seconds = plain.result()
        again = traced.result()[0] if traced is not None else None
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    # (progress lines, indented, may come first off a terminal)
    lines = [line for line in result.stderr.splitlines() if line.strip() and line[0] != " "]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert "Traceback" not in output and "unexpected" not in output
    assert seconds < TIME_BOUND, f"{args} took {seconds:.1f} s"
    if again is not None:
        assert again.returncode == code, again.stderr
        assert "Traceback" in again.stderr


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / ".env").write_bytes(b"")
    folder = tmp_path / "secrets"
    folder.mkdir()
    for name in ("db_username", "db_password", "registry_username", "registry_password"):
        (folder / f"{name}.txt").write_bytes(b"value-of-" + name.encode() + b"\r\n")
    return tmp_path


@contextmanager
def kube_peer(kind: str, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig whose API server fails as ``kind`` says."""
    config = tmp_path / "kubeconfig"
    if kind == "closed port":
        yield kubeconfig(config, f"http://127.0.0.1:{closed_port()}")
    elif kind == "never answers":
        with silent_listener() as port:
            yield kubeconfig(config, f"https://127.0.0.1:{port}")
    elif kind == "wrong CA":
        (tmp_path / "other").mkdir()
        other_ca, _ = self_signed(tmp_path / "other")  # a CA that did not sign the server's
        with fake_http(200, tls_dir=tmp_path) as port:
            yield kubeconfig(config, f"https://127.0.0.1:{port}", ca=other_ca)
    else:
        with fake_http(int(kind)) as port:
            yield kubeconfig(config, f"http://127.0.0.1:{port}")


PEER_WORDS = {
    "closed port": "connection refused",
    "never answers": "timed out",
    "wrong CA": "TLS verification failed",
    **{str(status): words for status, words in STATUS_WORDS.items()},
}


# Every task against every peer, each with and without --debug (the two runs side by side).
KUBE_CASES = [(task, peer) for task in KUBE_TASKS for peer in PEER_WORDS]


@pytest.mark.parametrize(("task", "peer"), KUBE_CASES, ids=[f"{t}-{p}" for t, p in KUBE_CASES])
def test_kube_api_failures(task: str, peer: str, workdir: Path) -> None:
    words = PEER_WORDS[peer]
    if (task, peer) == ("secrets.check", "404"):
        words = "not in sync"  # an absent Secret is the check's own finding
    if task == "backup.now" and peer in ("401", "403"):
        words = "refused to exec into"  # no lookup before the dump: its exec is the first call
    with kube_peer(peer, workdir) as config:
        assert_one_line(
            KUBE_TASKS[task],
            cwd=workdir,
            code=1,
            words=words,
            KUBECONFIG=str(config),
        )


def test_not_found_says_what_creates_it(workdir: Path) -> None:
    with kube_peer("404", workdir) as config:
        result, _ = run_inv(["rollout.status"], cwd=workdir, KUBECONFIG=str(config))
    assert "namespace 'development' not found" in result.stderr
    assert "run `inv deploy`" in result.stderr.lower(), result.stderr


DOCKER_WORDS = {
    "closed port": "connection refused",
    "never answers": "timed out",
    "wrong CA": "TLS verification failed",
}


@pytest.mark.parametrize("peer", DOCKER_WORDS, ids=DOCKER_WORDS)
@pytest.mark.parametrize("task", ["image.build", "image.push"])
def test_docker_engine_failures(task: str, peer: str, workdir: Path) -> None:
    """Seen: an engine that accepts and never answers hung `inv image.build` for 600 s."""
    (workdir / "app").mkdir()
    (workdir / "app" / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    if peer == "closed port":
        host = f"tcp://127.0.0.1:{closed_port()}"
        assert_one_line([task], cwd=workdir, code=1, words=DOCKER_WORDS[peer], DOCKER_HOST=host)
        return
    if peer == "wrong CA":
        # DOCKER_TLS_VERIFY with a CA (and client pair) that did not sign the engine's cert.
        certs = workdir / "docker-certs"
        certs.mkdir()
        other_ca, other_key = self_signed(certs)
        for name, source in (("ca.pem", other_ca), ("cert.pem", other_ca), ("key.pem", other_key)):
            (certs / name).write_bytes(source.read_bytes())
        with fake_http(200, tls_dir=workdir) as port:
            assert_one_line(
                [task],
                cwd=workdir,
                code=1,
                words=DOCKER_WORDS[peer],
                DOCKER_HOST=f"tcp://127.0.0.1:{port}",
                DOCKER_TLS_VERIFY="1",
                DOCKER_CERT_PATH=str(certs),
            )
        return
    with silent_listener() as port:
        host = f"tcp://127.0.0.1:{port}"
        assert_one_line([task], cwd=workdir, code=1, words=DOCKER_WORDS[peer], DOCKER_HOST=host)


def test_backup_list_with_the_cluster_down_fails(workdir: Path) -> None:
    """Seen: `inv backup.list` with the cluster down listed the local part and exited 0."""
    backups = workdir / "backups"
    backups.mkdir()
    (backups / "studentdb-local.dump").write_bytes(b"PGDMP")
    config = kubeconfig(workdir / "kubeconfig", f"http://127.0.0.1:{closed_port()}")
    result, _ = run_inv(["backup.list"], cwd=workdir, KUBECONFIG=str(config))
    assert result.returncode == 1
    assert "studentdb-local.dump" in result.stdout  # what could be listed still is
    assert "daemon backups not listed" in result.stderr


def test_debug_keeps_a_config_errors_exit_code(workdir: Path) -> None:
    """Seen: `inv --debug` turned a config error's exit 2 into 1."""
    environ = {"MANIFEST_BACKUP_KEEP": "lots"}
    plain, _ = run_inv(["config"], cwd=workdir, **environ)
    debug, _ = run_inv(["config"], cwd=workdir, debug=True, **environ)
    assert plain.returncode == debug.returncode == 2
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr


def test_restore_without_a_backup_named_is_exit_2(workdir: Path) -> None:
    """Seen: `backup.restore` with neither --file nor --from-daemon exited 1."""
    assert_one_line(["backup.restore"], cwd=workdir, code=2, words="--from-daemon")


EXEC_WORDS = {
    "closed port": "connection refused",
    "never answers": "timed out",
    "wrong CA": "TLS verification failed",
    "403": "refused to exec into",
    "404": "not found",
}


@pytest.mark.parametrize("peer", EXEC_WORDS, ids=EXEC_WORDS)
def test_exec_stream_failures(peer: str, tmp_path: Path) -> None:
    """The exec stream's handshake (every backup task's pg_dump/psql) fails as one error of
    ours, in seconds: kubernetes.stream connects its websocket with no timeout at all."""
    from ops.errors import ClusterError
    from ops.execstream import PodExec
    from ops.kube import KubeTarget

    with kube_peer(peer, tmp_path) as config:
        target = KubeTarget(kubeconfig=config, context="manifest-lab", namespace="development")
        started = time.monotonic()
        with pytest.raises(ClusterError) as caught:
            PodExec(target, "postgres-0").run(["true"])
        assert time.monotonic() - started < TIME_BOUND
    assert EXEC_WORDS[peer] in caught.value.message, caught.value.message


def test_a_local_file_problem_is_one_line_naming_the_path(workdir: Path) -> None:
    """The local file system's boundary: a file where the backups folder should be."""
    old = workdir / "old.sql"
    old.write_bytes(
        b"--\n-- PostgreSQL database dump\n--\n\n-- PostgreSQL database dump complete\n"
    )
    blocker = workdir / "not-a-folder"
    blocker.write_bytes(b"")
    assert_one_line(
        ["backup.import", str(old), "--backups-dir", str(blocker)],
        cwd=workdir,
        code=1,
        words=f"cannot use {blocker}",
    )
