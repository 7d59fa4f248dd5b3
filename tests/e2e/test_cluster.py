"""The lab cluster itself: node, private registry pulls, DNS, Services, exec.

These prove the paths the suite relies on before any of its own tests run:
the node pulls from localhost:30002 with the harbor-regcred secret (and fails
without it), CoreDNS resolves Service names, kube-proxy routes ClusterIPs, and
exec streams stdin and stdout through the API server.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import missing

from .conftest import Registry, wait_until

pytestmark = pytest.mark.e2e

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (lab.py install)
POD_TIMEOUT = 120


# --- helpers -------------------------------------------------------------------


def _pod(
    name: str,
    image: str,
    command: list[str],
    *,
    pull_secret: str | None = None,
    pull_policy: str = "IfNotPresent",
    restart: str = "Never",
    labels: dict[str, str] | None = None,
    port: int | None = None,
    scratch_dir: str | None = None,
) -> Any:
    from kubernetes import client

    container = client.V1Container(
        name="main",
        image=image,
        image_pull_policy=pull_policy,
        command=command,
        ports=[client.V1ContainerPort(container_port=port)] if port else None,
        volume_mounts=[client.V1VolumeMount(name="scratch", mount_path=scratch_dir)]
        if scratch_dir
        else None,
        security_context=client.V1SecurityContext(
            run_as_user=1000,
            run_as_non_root=True,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            containers=[container],
            restart_policy=restart,
            termination_grace_period_seconds=1,
            volumes=[client.V1Volume(name="scratch", empty_dir=client.V1EmptyDirVolumeSource())]
            if scratch_dir
            else None,
            image_pull_secrets=[client.V1LocalObjectReference(name=pull_secret)]
            if pull_secret
            else None,
        ),
    )


def _wait_phase(core_v1: Any, namespace: str, name: str, phases: set[str]) -> Any:
    pod: Any = None

    def reached() -> bool:
        nonlocal pod
        pod = core_v1.read_namespaced_pod(name, namespace)
        return pod.status.phase in phases

    try:
        wait_until(reached, timeout=POD_TIMEOUT, what=f"pod {namespace}/{name} in {phases}")
    except AssertionError:
        raise AssertionError(f"{_describe(core_v1, namespace, name, pod)}") from None
    return pod


def _wait_ready(core_v1: Any, namespace: str, name: str) -> Any:
    pod: Any = None

    def ready() -> bool:
        nonlocal pod
        pod = core_v1.read_namespaced_pod(name, namespace)
        conditions = pod.status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    try:
        wait_until(ready, timeout=POD_TIMEOUT, what=f"pod {namespace}/{name} Ready")
    except AssertionError:
        raise AssertionError(_describe(core_v1, namespace, name, pod)) from None
    return pod


def _describe(core_v1: Any, namespace: str, name: str, pod: Any) -> str:
    events = core_v1.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    lines = [f"pod {namespace}/{name}: phase {pod.status.phase if pod else '?'}"]
    for status in (pod.status.container_statuses or []) if pod else []:
        lines.append(f"  container {status.name}: {status.state}")
    lines += [f"  event {e.reason}: {e.message}" for e in events.items]
    return "\n".join(lines)


def _run_to_completion(core_v1: Any, namespace: str, pod: Any) -> str:
    core_v1.create_namespaced_pod(namespace, pod)
    done = _wait_phase(core_v1, namespace, pod.metadata.name, {"Succeeded", "Failed"})
    log = core_v1.read_namespaced_pod_log(pod.metadata.name, namespace)
    assert done.status.phase == "Succeeded", (
        f"{_describe(core_v1, namespace, pod.metadata.name, done)}\n{log}"
    )
    return str(log)


def _web_service(core_v1: Any, namespace: str, image: str, pull_secret: str) -> tuple[str, str]:
    """A busybox httpd pod behind a ClusterIP Service `web` (port 80 -> 8080)."""
    from kubernetes import client

    script = "echo hello-from-web > /www/index.html && exec httpd -f -vv -p 8080 -h /www"
    core_v1.create_namespaced_pod(
        namespace,
        _pod(
            "web",
            image,
            ["sh", "-c", script],
            pull_secret=pull_secret,
            restart="Always",
            labels={"app": "web"},
            port=8080,
            scratch_dir="/www",
        ),
    )
    service = core_v1.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(
                selector={"app": "web"},
                ports=[client.V1ServicePort(port=80, target_port=8080, protocol="TCP")],
            ),
        ),
    )
    _wait_ready(core_v1, namespace, "web")
    return "web", str(service.spec.cluster_ip)


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def busybox_image(docker_client: Any, registry: Registry) -> Iterator[str]:
    """A FROM-scratch busybox image, built here and pushed with auth under a unique tag."""
    if not BUSYBOX.exists():
        missing(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    ref = f"{registry.host}/e2e/busybox"
    tag = uuid.uuid4().hex[:12]
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = (
            b"FROM scratch\nCOPY busybox /bin/busybox\n"
            b'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nUSER 1000\n'
        )
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(BUSYBOX, arcname="busybox")
    context.seek(0)
    docker_client.images.build(fileobj=context, custom_context=True, tag=f"{ref}:{tag}", rm=True)
    errors = [
        chunk["error"]
        for chunk in docker_client.api.push(
            ref, tag=tag, stream=True, decode=True, auth_config=registry.auth_config()
        )
        if "error" in chunk
    ]
    assert not errors, f"push of {ref}:{tag} failed: {errors}"
    yield f"{ref}:{tag}"
    docker_client.images.remove(f"{ref}:{tag}", force=True)


# --- tests ---------------------------------------------------------------------


def test_node_is_ready(core_v1: Any) -> None:
    nodes = core_v1.list_node().items
    assert nodes, "the cluster has no node"
    for node in nodes:
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", f"node {node.metadata.name}: {ready}"


def test_private_image_is_pulled_with_harbor_regcred(
    core_v1: Any, namespace: str, harbor_regcred: str, busybox_image: str
) -> None:
    pod = _pod(
        "hello",
        busybox_image,
        ["sh", "-c", "echo hello from $(hostname)"],
        pull_secret=harbor_regcred,
        pull_policy="Always",
    )
    log = _run_to_completion(core_v1, namespace, pod)
    assert log.strip() == "hello from hello"


def test_pull_without_secret_fails_with_auth_error(
    core_v1: Any, namespace: str, busybox_image: str
) -> None:
    core_v1.create_namespaced_pod(
        namespace, _pod("no-secret", busybox_image, ["true"], pull_policy="Always")
    )
    waiting: Any = None

    def pull_failed() -> bool:
        nonlocal waiting
        pod = core_v1.read_namespaced_pod("no-secret", namespace)
        statuses = pod.status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting is not None and waiting.reason in {"ErrImagePull", "ImagePullBackOff"}

    wait_until(pull_failed, timeout=POD_TIMEOUT, what="the pull without credentials to fail")
    events = core_v1.list_namespaced_event(
        namespace, field_selector="involvedObject.name=no-secret"
    )
    messages = " ".join([waiting.message or ""] + [e.message or "" for e in events.items]).lower()
    assert any(
        word in messages for word in ("401", "unauthorized", "authorization", "no basic auth")
    ), messages


def test_dns_resolves_a_service_name(
    core_v1: Any, namespace: str, harbor_regcred: str, busybox_image: str
) -> None:
    name, cluster_ip = _web_service(core_v1, namespace, busybox_image, harbor_regcred)
    fqdn = f"{name}.{namespace}.svc.cluster.local"
    log = _run_to_completion(
        core_v1,
        namespace,
        _pod(
            "lookup",
            busybox_image,
            ["sh", "-c", f"nslookup {fqdn}; echo ---; nslookup -type=a {name}; true"],
            pull_secret=harbor_regcred,
        ),
    )
    # busybox's nslookup exits non-zero when any search domain says NXDOMAIN: read the answers.
    full, short = log.split("---", 1)
    assert f"Name:\t{fqdn}\nAddress: {cluster_ip}" in full, log
    assert f"Name:\t{fqdn}\nAddress: {cluster_ip}" in short, log


def test_cluster_ip_service_answers_through_kube_proxy(
    core_v1: Any, namespace: str, harbor_regcred: str, busybox_image: str
) -> None:
    _, cluster_ip = _web_service(core_v1, namespace, busybox_image, harbor_regcred)
    # (Debian busybox-static 1.35: `wget -T` segfaults, hence `timeout`.)
    url = f"http://{cluster_ip}:80/"
    script = f"for i in $(seq 20); do timeout 5 wget -q -O - {url} && exit 0; sleep 1; done; exit 1"
    log = _run_to_completion(
        core_v1,
        namespace,
        _pod("client", busybox_image, ["sh", "-c", script], pull_secret=harbor_regcred),
    )
    assert "hello-from-web" in log


def test_exec_streams_stdin_and_stdout(
    core_v1: Any, namespace: str, harbor_regcred: str, busybox_image: str
) -> None:
    from kubernetes.stream import stream

    core_v1.create_namespaced_pod(
        namespace,
        _pod(
            "shell", busybox_image, ["sleep", "3600"], pull_secret=harbor_regcred, restart="Always"
        ),
    )
    _wait_ready(core_v1, namespace, "shell")
    payload = os.urandom(256 * 1024)
    resp = stream(
        core_v1.connect_get_namespaced_pod_exec,
        "shell",
        namespace,
        command=["sh", "-c", f"head -c {len(payload)} | sha256sum; echo done >&2"],
        stdin=True,
        stdout=True,
        stderr=True,
        tty=False,
        _preload_content=False,
        binary=True,
    )
    out, err = b"", b""
    try:
        for offset in range(0, len(payload), 32 * 1024):
            resp.write_stdin(payload[offset : offset + 32 * 1024])
        deadline = time.monotonic() + 60
        while resp.is_open() and time.monotonic() < deadline:
            resp.update(timeout=1)
            out += resp.read_stdout() or b""
            err += resp.read_stderr() or b""
        returncode = resp.returncode
    finally:
        resp.close()
    assert out.split()[0].decode() == hashlib.sha256(payload).hexdigest()
    assert err.strip() == b"done"
    assert returncode == 0
