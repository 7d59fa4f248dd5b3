"""The exec stream's upload path against the lab cluster, under CPU load: every byte sent
into a pod's command arrives, in order, and stdin ends exactly at the end of the file.

Seen: one restore in four of the 100 MiB row (load ~12 on 2 cores) failed in the pod with
"pg_restore: could not read from input file: end of file". Suspect: the upload. This loop
(random file, slow reader in the pod, two local busy loops, bounded by
MANIFEST_EXEC_UPLOAD_SECONDS) compares the size and digest that arrived with what was sent."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ops.execstream import PodExec
from ops.kube import KubeTarget
from tests.e2e.conftest import wait_until
from tests.support.services import missing

pytestmark = pytest.mark.e2e

UPLOAD_MIB = int(os.environ.get("MANIFEST_EXEC_UPLOAD_MIB", "160"))
BUDGET_SECONDS = float(os.environ.get("MANIFEST_EXEC_UPLOAD_SECONDS", "60"))
MIN_ROUNDS = 3

# A bounded busy loop: the load ends with the test even if the test is killed.
_BUSY = (
    "import time,sys\nend=time.monotonic()+float(sys.argv[1])\nwhile time.monotonic()<end: pass\n"
)


@pytest.fixture
def shell_pod(core_v1: Any, namespace: str, harbor_regcred: str) -> str:
    image = os.environ.get("MANIFEST_TEST_POSTGRES_IMAGE")
    if not image:
        missing("MANIFEST_TEST_POSTGRES_IMAGE is not set (source /tmp/manifest-lab/env)")
    core_v1.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "shell"},
            "spec": {
                "imagePullSecrets": [{"name": harbor_regcred}],
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {"name": "shell", "image": image, "command": ["sh", "-c", "sleep 3600"]}
                ],
            },
        },
    )

    def running() -> bool:
        pod = core_v1.read_namespaced_pod("shell", namespace)
        return pod.status.phase == "Running"

    wait_until(running, timeout=120, what="pod shell running")
    return "shell"


def test_uploads_under_load_arrive_whole(
    shell_pod: str, namespace: str, kube_context: str, tmp_path: Path
) -> None:
    data = tmp_path / "upload.bin"
    digest = hashlib.sha256()
    with data.open("wb") as f:
        for _ in range(UPLOAD_MIB):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            f.write(block)
    size = data.stat().st_size
    expected = f"{size} {digest.hexdigest()}"
    runner = PodExec(
        KubeTarget(kubeconfig=None, context=kube_context, namespace=namespace), shell_pod
    )
    # What arrived: its size and digest, computed from one read of stdin in the pod.
    # A slow reader, as pg_restore | psql is: the pod's pipes stay full while stdin ends.
    slow = os.environ.get("MANIFEST_EXEC_SLOW", "0.3")
    command = [
        "sh",
        "-c",
        "rm -f /tmp/up; while head -c 4194304 >/tmp/part && [ -s /tmp/part ]; do "
        'cat /tmp/part >>/tmp/up; sleep "$0"; done; '
        'echo "$(wc -c </tmp/up) $(sha256sum </tmp/up | cut -d" " -f1)"; rm -f /tmp/up',
        slow,
    ]
    load = [
        subprocess.Popen([sys.executable, "-c", _BUSY, str(BUDGET_SECONDS + 60)]) for _ in range(2)
    ]
    results: list[tuple[str, float]] = []
    try:
        started = time.monotonic()
        while len(results) < MIN_ROUNDS or time.monotonic() - started < BUDGET_SECONDS:
            t0 = time.monotonic()
            with data.open("rb") as f:
                result = runner.run(command, stdin=f, stdin_size=size, check=False)
            got = result.stdout.decode().strip()
            results.append(
                (f"{result.returncode} {got} sent={result.stdin_bytes}", time.monotonic() - t0)
            )
            print(results[-1], flush=True)
            if got != expected:
                break
    finally:
        for proc in load:
            proc.kill()
            proc.wait()
    bad = [r for r in results if not r[0].startswith(f"0 {expected}")]
    assert not bad, f"expected {expected}; {len(bad)} of {len(results)} differ: {bad}"
