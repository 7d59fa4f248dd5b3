"""The seed's last disaster-recovery row, for real: the lab cluster reset.

It tears the shared lab cluster down, so it is **not** part of the default run: it runs
only with `pytest --cluster-reset` (which runs nothing else), as its own phase of `.ci/run`
after the main test run, or by hand under the lab's exclusive lock:

    flock -x /tmp/lab.lock .venv/bin/python -m pytest --cluster-reset -s \\
        tests/e2e/test_cluster_reset_e2e.py

The scenario proven is the true disaster: `lab.py cluster-down` stops every cluster process
and deletes the hostpath volumes (`/tmp/hostpath_pv`: PostgreSQL's data directory with
them); `lab.py cluster-up` deletes `$MANIFEST_LAB_DIR/cluster` (etcd's data directory, the
cluster's CA, containerd's images) and starts an empty cluster. The test checks each of
those, so a lab that kept something would fail it. Only the registry and the Docker engine
(services outside the cluster) and the local `backups/` folder survive. Then `inv deploy`,
`inv secrets.apply` and `inv backup.restore --file …` must bring the database back equal,
byte for byte, to its plain dump at the time of the backup; the recovery time (RTO) and the
data lost (RPO) are printed (`-s`). Whatever happens, the lab cluster is up again at the end.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.backups.commands import pg_command
from ops.config import load_settings
from ops.execstream import PodExec
from ops.kube import resolve_target
from tests.e2e.conftest import Registry, wait_until
from tests.e2e.test_deploy_e2e import (
    Lab,
    answers_with,
    forget_namespace,
    make_lab,
    push_latest,
    report,
)
from tests.e2e.test_manifests_e2e import service_call
from tests.support.services import missing

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_reset]

ROOT = Path(__file__).resolve().parents[2]
LAB_PY = ROOT / "lab" / "lab.py"
HOSTPATH_PV_DIR = Path("/tmp/hostpath_pv")  # the controller-manager's hostpath provisioner


def lab_dir() -> Path:
    return Path(os.environ.get("MANIFEST_LAB_DIR", "/tmp/manifest-lab")).resolve()


def lab_py(command: str) -> float:
    """`python3 lab/lab.py COMMAND` for this lab dir; returns its duration in seconds."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(LAB_PY), command],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, (
        f"lab.py {command} exited {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return time.monotonic() - started


def connect(kube_context: str) -> Any:
    """A CoreV1Api from the kubeconfig as it is now (a new cluster has a new CA)."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"], context=kube_context)
    return client.CoreV1Api(api)


def answers(core_v1: Any) -> bool:
    try:
        core_v1.read_namespace("kube-system", _request_timeout=5)
    except Exception:  # refused, TLS from the old CA, …: not this cluster, or none
        return False
    return True


def postgres(lab: Lab, kube_context: str) -> PodExec:
    flags = {
        "kubeconfig": os.environ["KUBECONFIG"],
        "context": kube_context,
        "namespace": lab.namespace,
    }
    settings = load_settings(flags, env_file=lab.folder / "empty.env", environ={})
    return PodExec(resolve_target(settings), "postgres-0")


def psql(runner: PodExec, sql: str) -> str:
    command = pg_command(
        "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", "studentdb", "-c", sql
    )
    return runner.run(command).stdout.decode().strip()


def plain_dump(runner: PodExec) -> bytes:
    """Schema and data as plain SQL, without pg_dump's per-run `\\restrict` key lines."""
    out = io.BytesIO()
    runner.run(pg_command("pg_dump", "--format=plain", "--no-owner", "-d", "studentdb"), stdout=out)
    return b"\n".join(line for line in out.getvalue().split(b"\n") if not line.startswith(b"\\"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def reset_lab(tmp_path: Path, core_v1: Any, kube_context: str, registry: Registry) -> Iterator[Lab]:
    """A Lab in a fresh namespace; afterwards the cluster is up (brought up if it is not)
    and the namespace and its retained volumes are gone."""
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if Path(kubeconfig).resolve() != lab_dir() / "kubeconfig":
        missing(
            f"KUBECONFIG ({kubeconfig}) is not {lab_dir() / 'kubeconfig'}: this test resets "
            "the cluster of MANIFEST_LAB_DIR only"
        )
    lab = make_lab(tmp_path, f"e2e-reset-{uuid.uuid4().hex[:8]}", kube_context, registry, core_v1)
    try:
        yield lab
    finally:
        if not answers(connect(kube_context)):
            lab_py("cluster-up")
        lab.core_v1 = connect(kube_context)
        forget_namespace(lab.core_v1, lab.namespace)


@pytest.mark.timeout(1800)  # an image build, two deploys, the reset, a restore
def test_cluster_reset_deploy_secrets_restore_bring_every_row_back(
    reset_lab: Lab,
    kube_context: str,
    registry: Registry,
    app_image: str,
    docker_client: Any,
) -> None:
    lab = reset_lab
    push_latest(docker_client, registry, app_image)
    deployed = lab.inv("deploy")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    for name, age in (("Max", 25), ("Erika", 31), ('Jürgen "J" O\'Brien', 22)):
        service_call(lab.core_v1, lab.namespace, "POST", "api/student", {"name": name, "age": age})
    runner = postgres(lab, kube_context)
    psql(
        runner,
        "INSERT INTO student (name, age) SELECT 'student ' || g || E' \\u00fc\\t;', 18 + g % 50 "
        "FROM generate_series(1, 2000) g",
    )
    backed_up = lab.inv("backup.now")
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    backup_done = time.monotonic()
    [dump] = sorted((lab.folder / "backups").glob("*.dump"))
    dump_sha256 = sha256(dump)
    at_backup = plain_dump(runner)
    assert at_backup.count(b"student ") >= 2000
    rows = sorted(lab.students(), key=lambda r: r["id"])
    late = service_call(
        lab.core_v1, lab.namespace, "POST", "api/student", {"name": "After", "age": 40}
    )
    # What the reset must take away: etcd's objects, the volume's files.
    kube_system_uid = lab.core_v1.read_namespace("kube-system").metadata.uid
    claim = lab.core_v1.read_namespaced_persistent_volume_claim(
        "postgres-data-postgres-0", lab.namespace
    )
    data_dir = Path(lab.core_v1.read_persistent_volume(claim.spec.volume_name).spec.host_path.path)
    assert data_dir.is_relative_to(HOSTPATH_PV_DIR), data_dir
    assert any(data_dir.rglob("PG_VERSION")), f"no PostgreSQL data under {data_dir}"

    failed = time.monotonic()
    down = lab_py("cluster-down")
    assert not data_dir.exists(), f"cluster-down kept the volume's files in {data_dir}"
    assert not answers(lab.core_v1)
    up = lab_py("cluster-up")
    started = time.monotonic()
    lab.core_v1 = connect(kube_context)
    assert lab.core_v1.read_namespace("kube-system").metadata.uid != kube_system_uid  # new etcd
    assert not lab.namespace_exists()
    assert lab.core_v1.list_persistent_volume().items == []
    assert sha256(dump) == dump_sha256  # the local backup is all that is left

    deployed_again = lab.inv("deploy")
    assert deployed_again.returncode == 0, deployed_again.stdout + deployed_again.stderr
    assert "re-bind" not in deployed_again.stdout  # no volume survived: a fresh database
    deploy_seconds = lab.timings["deploy"]
    assert lab.students() == []
    secrets = lab.inv("secrets.apply", "--yes")
    assert secrets.returncode == 0, secrets.stdout + secrets.stderr
    assert "db-credentials: unchanged" in secrets.stdout, secrets.stdout
    assert "harbor-regcred: unchanged" in secrets.stdout, secrets.stdout
    restored = lab.inv("backup.restore", "--file", str(dump), "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    ended = answers_with(lab, rows)

    assert plain_dump(postgres(lab, kube_context)) == at_backup  # byte for byte
    assert late["id"] not in {r["id"] for r in lab.students()}  # written after the backup
    print(
        f"cluster reset: cluster-down {down:.1f} s, cluster-up {up:.1f} s (not in the RTO); "
        f"inv deploy {deploy_seconds:.1f} s, inv secrets.apply {lab.timings['secrets.apply']:.1f}"
        f" s, inv backup.restore {lab.timings['backup.restore']:.1f} s; "
        f"{len(at_backup)} bytes of plain dump equal"
    )
    report(
        "cluster reset (etcd and hostpath volumes wiped) → deploy + secrets.apply + restore",
        started,
        ended,
        f"1 row lost (written after the newest backup; it was {failed - backup_done:.0f} s old)",
    )


def test_the_cluster_is_up_after_the_reset(kube_context: str) -> None:
    """The lab is left as found: the next phase (and the next engineer) needs it."""
    core_v1 = connect(kube_context)
    wait_until(lambda: answers(core_v1), timeout=60, what="the lab's API server")
    nodes = core_v1.list_node().items
    assert [c.status for n in nodes for c in n.status.conditions if c.type == "Ready"] == ["True"]
