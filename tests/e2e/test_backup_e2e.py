"""Backups against the lab cluster: the real exec API, a real PostgreSQL pod, the real daemon
script. Each test gets its own namespace with a ``postgres-0`` pod (the lab's postgres image),
``db-credentials``, and the backup daemon (Deployment ``postgres-backup`` running
k8s/base/backup/backup.sh on an emptyDir)."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ops import backups
from ops.backups.commands import pg_command
from ops.backups.daemon import list_daemon
from ops.backups.pods import daemon_runner
from ops.config import load_settings
from ops.errors import BackupError, DumpFailed, NotFound, RestoreFailed
from ops.execstream import PodExec
from ops.kube import resolve_target
from tests.e2e.conftest import wait_until
from tests.support.inv import clean_env
from tests.support.inv import run_inv as inv
from tests.support.services import missing

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "k8s" / "base" / "backup" / "backup.sh"


def _image() -> str:
    image = os.environ.get("MANIFEST_TEST_POSTGRES_IMAGE")
    if not image:
        missing("MANIFEST_TEST_POSTGRES_IMAGE is not set (source /tmp/manifest-lab/env)")
    return image


def shipped_postgres_memory_limit() -> str:
    """The postgres container's memory limit as k8s/base ships it."""
    import yaml

    text = (ROOT / "k8s" / "base" / "postgres-statefulset.yaml").read_text()
    for doc in yaml.safe_load_all(text):
        if doc and doc.get("kind") == "StatefulSet":
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            return str(container["resources"]["limits"]["memory"])
    raise AssertionError("no StatefulSet in postgres-statefulset.yaml")


def _postgres_pod(image: str, pull_secret: str, memory: str | None = None) -> dict[str, Any]:
    def cred(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": "db-credentials", "key": key}}

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "postgres-0", "labels": {"app": "postgres"}},
        "spec": {
            "imagePullSecrets": [{"name": pull_secret}],
            "containers": [
                {
                    "name": "postgres",
                    "image": image,
                    "env": [
                        {"name": "POSTGRES_USER", "valueFrom": cred("username")},
                        {"name": "POSTGRES_PASSWORD", "valueFrom": cred("password")},
                        {"name": "POSTGRES_DB", "value": "studentdb"},
                    ],
                    "ports": [{"containerPort": 5432}],
                    **(
                        {
                            "resources": {
                                "limits": {"memory": memory},
                                "requests": {"memory": "256Mi"},
                            }
                        }
                        if memory
                        else {}
                    ),
                    "readinessProbe": {
                        "exec": {
                            "command": [
                                "sh",
                                "-c",
                                'pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d studentdb',
                            ]
                        },
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def _daemon(image: str, pull_secret: str) -> dict[str, Any]:
    def cred(key: str) -> dict[str, Any]:
        return {"secretKeyRef": {"name": "db-credentials", "key": key}}

    labels = {"app.kubernetes.io/name": "postgres-backup"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "postgres-backup"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "imagePullSecrets": [{"name": pull_secret}],
                    "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999},
                    "containers": [
                        {
                            "name": "postgres-backup",
                            "image": image,
                            "command": ["sh", "/scripts/backup.sh", "loop"],
                            "env": [
                                {"name": "PGHOST", "value": "postgres-service"},
                                {"name": "PGDATABASE", "value": "studentdb"},
                                {"name": "PGUSER", "valueFrom": cred("username")},
                                {"name": "PGPASSWORD", "valueFrom": cred("password")},
                                {"name": "BACKUP_DIR", "value": "/backups"},
                                {"name": "KEEP", "value": "3"},
                            ],
                            "volumeMounts": [
                                {"name": "backups", "mountPath": "/backups"},
                                {"name": "script", "mountPath": "/scripts"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "backups", "emptyDir": {}},
                        {"name": "script", "configMap": {"name": "postgres-backup-script"}},
                    ],
                },
            },
        },
    }


@pytest.fixture
def lab(kube_api, core_v1, namespace, harbor_regcred, tmp_path, kube_context, request):
    """A namespace with postgres-0 (seeded) and the backup daemon, plus Settings for it.

    Parametrized indirectly, the value is postgres-0's memory limit.
    """
    memory = getattr(request, "param", None)
    from kubernetes import client

    image = _image()
    core_v1.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "db-credentials"},
            "stringData": {"username": "app_user", "password": secrets.token_urlsafe(18)},
        },
    )
    core_v1.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "postgres-backup-script"}, "data": {"backup.sh": SCRIPT.read_text()}},
    )
    core_v1.create_namespaced_pod(namespace, _postgres_pod(image, harbor_regcred, memory))
    core_v1.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "postgres-service"},
            "spec": {"selector": {"app": "postgres"}, "ports": [{"port": 5432}]},
        },
    )
    client.AppsV1Api(kube_api).create_namespaced_deployment(
        namespace, _daemon(image, harbor_regcred)
    )

    def ready() -> bool:
        pod = core_v1.read_namespaced_pod("postgres-0", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))

    wait_until(ready, timeout=180, what="postgres-0 ready")
    settings = load_settings(
        {
            "context": kube_context,
            "namespace": namespace,
            "backups_dir": str(tmp_path / "backups"),
        },
    )
    target = resolve_target(settings)
    runner = PodExec(target, "postgres-0")
    psql(
        runner,
        "CREATE TABLE student (id serial PRIMARY KEY, name text NOT NULL, age int);"
        "INSERT INTO student (name, age) SELECT 'student ' || g || E' \\u00fc', 18 + g % 50 "
        "FROM generate_series(1, 5000) g;",
    )
    return settings, runner


def psql(runner: PodExec, sql: str, database: str = "studentdb") -> str:
    result = runner.run(
        pg_command(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql
        )
    )
    return result.stdout.decode().strip()


def fingerprint(runner: PodExec) -> str:
    return psql(
        runner,
        "SELECT count(*) || ':' || md5(string_agg(id || '/' || name || '/' || age, ',' "
        "ORDER BY id)) FROM student",
    )


def test_exec_stream_is_binary_exact_both_ways(lab):
    _, runner = lab
    data = os.urandom(20 * 1024 * 1024) + b"\r\n\x00" * 1000
    result = runner.run(["sha256sum"], stdin=io.BytesIO(data), stdin_size=len(data))
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    out = io.BytesIO()
    runner.run(["sh", "-c", "head -c 30000000 /dev/urandom > /tmp/r && cat /tmp/r"], stdout=out)
    remote = runner.run(["sha256sum", "/tmp/r"]).stdout.split()[0].decode()
    assert hashlib.sha256(out.getvalue()).hexdigest() == remote and len(out.getvalue()) == 30000000


def test_backup_change_restore_gives_the_rows_back_exactly(lab):
    settings, runner = lab
    before = fingerprint(runner)
    path, info = backups.backup_now(settings)
    assert path.name.startswith("studentdb-") and info.source_pod == "postgres-0"
    assert info.database == "studentdb" and info.server_version.startswith("15")
    verification = backups.verify_file(settings, path, reader="pod")
    assert any("full read" in c for c in verification.checks)
    drilled = backups.drill_in_pod(settings, path)
    restored, live = drilled.restored, drilled.live
    assert restored == live == {"public.student": 5000}

    psql(runner, "DELETE FROM student WHERE id % 2 = 0; UPDATE student SET name = 'changed'")
    assert fingerprint(runner) != before

    restore = backups.plan_restore(settings, file=path, from_daemon=None)
    plan = {item.key: item.value for item in restore.items}
    assert plan["pod"] == "postgres-0" and plan["database"] == "studentdb"
    report = backups.run_restore(restore.work)
    assert fingerprint(runner) == before
    assert report.tables == {"public.student": 5000}
    assert report.safety_backup is not None and report.safety_backup.exists()


def test_a_restore_failing_midway_leaves_the_database_unchanged(lab):
    settings, runner = lab
    psql(runner, "CREATE ROLE e2e_reader; GRANT SELECT ON student TO e2e_reader")
    path, _ = backups.backup_now(settings)
    # The dump's GRANT, after all data is back, then fails: everything must roll back.
    psql(runner, "REVOKE ALL ON student FROM e2e_reader; DROP ROLE e2e_reader")
    psql(runner, "UPDATE student SET age = 1 WHERE id < 10; CREATE VIEW v AS SELECT * FROM student")
    before = plain_dump(runner)
    session = backups.plan_restore(settings, file=path, from_daemon=None).work
    with pytest.raises(RestoreFailed, match='role "e2e_reader" does not exist') as caught:
        backups.run_restore(session)
    assert plain_dump(runner) == before
    assert "the safety backup taken before is" in caught.value.message


def plain_dump(runner: PodExec, database: str = "studentdb") -> str:
    """The database's schema and data as plain SQL, without the per-run \\restrict key."""
    out = io.BytesIO()
    runner.run(pg_command("pg_dump", "--format=plain", "--no-owner", "-d", database), stdout=out)
    text = out.getvalue().decode()
    return "\n".join(line for line in text.splitlines() if not line.startswith("\\"))


def run_inv(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--context", settings.context, "--namespace", settings.namespace]
    return inv(
        *args,
        *where,
        "--backups-dir",
        str(settings.backups_dir),
        env=clean_env(COLUMNS="250"),
        timeout=300,
    )


def test_a_restore_leaves_exactly_the_backup_and_never_crosses_databases(lab):
    """Seen: a table made after the dump survived the restore; a dump of A restored into B
    with --yes kept B's own table beside A's data."""
    settings, runner = lab
    original = plain_dump(runner)
    path, _ = backups.backup_now(settings)
    psql(
        runner,
        "CREATE TABLE made_later (id int); INSERT INTO made_later VALUES (1);"
        "CREATE SCHEMA reporting; CREATE VIEW reporting.n AS SELECT count(*) FROM student;"
        "ALTER TABLE student ADD COLUMN email text; DELETE FROM student WHERE id % 3 = 0;",
    )
    done = run_inv(settings, "backup.restore", "--file", str(path), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert plain_dump(runner) == original

    psql(runner, "CREATE DATABASE otherdb")
    psql(runner, "CREATE TABLE own_table (x int); INSERT INTO own_table VALUES (42)", "otherdb")
    refused = run_inv(
        settings, "backup.restore", "--file", str(path), "--database", "otherdb", "--yes"
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "backup is of database 'studentdb'" in errors[0], errors
    assert refused.stderr.rstrip().endswith(errors[0])  # progress above it, the error last
    assert "--from-database studentdb" in errors[0] and "Traceback" not in refused.stderr
    assert psql(runner, "SELECT x FROM own_table", "otherdb") == "42"

    crossed = run_inv(
        settings,
        "backup.restore",
        "--file",
        str(path),
        "--database",
        "otherdb",
        "--from-database",
        "studentdb",
        "--yes",
    )
    assert crossed.returncode == 0, crossed.stdout + crossed.stderr
    assert "a backup of 'studentdb' replaces everything in 'otherdb'" in crossed.stderr
    assert plain_dump(runner, "otherdb") == original  # B holds exactly A's backup


def test_to_daemon_checks_sha256_in_the_pod_and_never_overwrites(lab):
    settings, runner = lab
    path, info = backups.backup_now(settings)
    _wait_for_daemon(settings)
    sent = backups.to_daemon(settings, path, name=path.name)
    where, digest = sent.where, sent.sha256
    assert digest == info.sha256 and "postgres-backup" in where
    daemon = daemon_runner(settings)
    check = daemon.run(["sh", "-c", 'cd /backups && sha256sum -c "$0.sha256"', path.name])
    assert b"OK" in check.stdout
    with pytest.raises(BackupError, match="already exists"):
        backups.to_daemon(settings, path, name=path.name)
    listing = backups.list_all(settings, check=True)
    listed, problem = listing.backups, listing.daemon_problem
    assert not problem
    ours = [b for b in listed if b.where == "daemon" and b.name == path.name]
    assert ours and ours[0].verified == "sha256 ok" and ours[0].size == info.size

    psql(runner, "DELETE FROM student")
    session = backups.plan_restore(settings, file=None, from_daemon=path.name).work
    report = backups.run_restore(session)
    assert report.tables == {"public.student": 5000}


def test_the_daemons_retention_keeps_uploads_until_backup_prune(lab):
    """Seen: an upload counted against the daemon's keep and was pruned minutes later."""
    settings, _ = lab
    path, info = backups.backup_now(settings)
    _wait_for_daemon(settings)
    backups.to_daemon(settings, path, name=path.name)
    daemon = daemon_runner(settings)
    # KEEP=3 in this daemon: five more runs of its own would prune any upload it counted.
    for _ in range(5):
        wait_until(
            lambda: daemon.run(["sh", "/scripts/backup.sh", "once"], check=False).returncode == 0,
            timeout=60,
            what="a daemon backup",
            interval=1.1,
        )
    listed = list_daemon(daemon)
    own = [b for b in listed if b.name.startswith("continuous-")]
    assert len(own) == 3, listed
    (upload,) = [b for b in listed if b.name == path.name]
    assert upload.modified.isoformat(timespec="seconds") == info.created  # the dump's time

    def prune(*args: str) -> subprocess.CompletedProcess[str]:
        where = ["--context", settings.context, "--namespace", settings.namespace]
        return inv("backup.prune", *args, *where)

    absent = prune("--name", "no-such.dump", "--yes")
    assert absent.returncode == 1 and "Traceback" not in absent.stderr
    assert [line for line in absent.stderr.splitlines() if line.strip()] == [
        line for line in absent.stderr.splitlines() if "not in the daemon's /backups" in line
    ]
    unconfirmed = prune("--name", path.name)  # no TTY: not confirmed, nothing deleted
    assert unconfirmed.returncode == 1 and path.name in unconfirmed.stdout
    assert path.name in {b.name for b in list_daemon(daemon)}
    done = prune("--name", path.name, "--yes")
    assert done.returncode == 0, done.stderr
    names = {b.name for b in list_daemon(daemon)}
    assert path.name not in names and len([n for n in names if n.startswith("continuous-")]) == 3
    gone = daemon.run(["sh", "-c", 'ls /backups/"$0"*', path.name], check=False)
    assert gone.returncode != 0  # the sidecar went with it


def _wait_for_daemon(settings: Any) -> None:
    from ops.errors import ClusterError

    def daemon_up() -> bool:
        try:
            daemon_runner(settings)
        except ClusterError:
            return False
        return True

    wait_until(daemon_up, timeout=120, what="the backup daemon's pod")


def test_pg_dump_failing_in_the_pod_shows_its_stderr(lab):
    settings, _ = lab
    wrong = load_settings(
        {
            "context": settings.context,
            "namespace": settings.namespace,
            "database": "nope",
            "backups_dir": str(settings.backups_dir),
        },
    )
    with pytest.raises(DumpFailed, match='database "nope" does not exist'):
        backups.backup_now(wrong)
    assert not list(settings.backups_dir.glob("*"))


def test_a_missing_pod_is_one_clear_line(lab):
    settings, _ = lab
    missing = load_settings(
        {"context": settings.context, "namespace": settings.namespace, "postgres_pod": "nope-0"},
    )
    with pytest.raises(NotFound, match="pod 'nope-0' not found"):
        backups.backup_now(missing)
    result = run_inv(settings, "backup.now", "--pod", "nope-0")
    assert result.returncode == 1
    assert "pod 'nope-0' not found" in result.stderr and "Traceback" not in result.stderr


def test_the_daemon_own_backups_are_listed_and_restore(lab):
    settings, runner = lab
    before = fingerprint(runner)
    _wait_for_daemon(settings)
    daemon = daemon_runner(settings)

    # The loop's first run may have met a database (or Service) still starting: run one now.
    def one_backup() -> bool:
        return daemon.run(["sh", "/scripts/backup.sh", "once"], check=False).returncode == 0

    wait_until(one_backup, timeout=60, what="a daemon backup", interval=2)
    listed = list_daemon(daemon, check=True)
    assert any(b.name.startswith("continuous-") and b.format == "plain" for b in listed), listed
    assert all(b.verified == "sha256 ok" for b in listed), listed

    # The daemon's plain dumps are made without --clean; the restore still replaces.
    psql(runner, "DELETE FROM student WHERE id > 10; UPDATE student SET age = 0")
    name = next(b.name for b in listed if b.name.startswith("continuous-"))
    session = backups.plan_restore(settings, file=None, from_daemon=name, safety_backup=False).work
    backups.run_restore(session)
    assert fingerprint(runner) == before


def test_dry_run_touches_nothing(lab):
    settings, _ = lab
    result = run_inv(settings, "backup.now", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "Dry run" in result.stdout and not settings.backups_dir.exists()


def test_keepalive_holds_a_quiet_stream_open(lab):
    settings, _ = lab
    quiet = PodExec(resolve_target(settings), "postgres-0", keepalive_seconds=1)
    # silent for 5 s, longer than the 3 s without a frame after which a stream counts as dead
    assert quiet.run(["sh", "-c", "sleep 5; echo done"]).stdout == b"done\n"


def test_ctrl_c_mid_backup_keeps_nothing_and_ends_pg_dump_in_the_pod(lab):
    import contextlib

    settings, runner = lab
    psql(
        runner,
        "CREATE TABLE noise AS SELECT g AS id, decode(string_agg(md5(random()::text), ''), "
        "'hex') AS data FROM generate_series(1, 4000) g, generate_series(1, 256) GROUP BY g",
    )

    @contextlib.contextmanager
    def interrupt_after(_description, _total):
        seen = 0

        def advance(n):
            nonlocal seen
            seen += n
            if seen > 2_000_000:
                raise KeyboardInterrupt

        yield advance

    with pytest.raises(KeyboardInterrupt):
        backups.backup_now(settings, progress=interrupt_after)
    assert not list(settings.backups_dir.glob("*"))

    def no_pg_dump() -> bool:
        return (
            psql(runner, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'")
            == "0"
        )

    wait_until(no_pg_dump, timeout=30, what="pg_dump in the pod to end")


def test_an_upload_into_a_command_that_exits_early_returns_at_once(lab):
    _, runner = lab
    started = time.monotonic()
    size = 200 * 1024 * 1024
    result = runner.run(
        ["sh", "-c", "head -c 10 >/dev/null; echo gave up >&2; exit 3"],
        stdin=io.BytesIO(bytes(size)),
        stdin_size=size,
        check=False,
    )
    assert (result.returncode, result.stderr) == (3, "gave up")
    assert time.monotonic() - started < 60


def test_a_pod_that_is_not_running_is_one_clear_line(lab, core_v1):
    from ops.errors import ClusterError

    settings, _ = lab
    core_v1.create_namespaced_pod(
        settings.namespace,
        {
            "metadata": {"name": "pending-0"},
            "spec": {
                "containers": [{"name": "c", "image": "localhost:30002/does/not:exist"}],
            },
        },
    )
    stuck = load_settings(
        {
            "context": settings.context,
            "namespace": settings.namespace,
            "postgres_pod": "pending-0",
            "backups_dir": str(settings.backups_dir),
        },
    )
    with pytest.raises(ClusterError, match=r"pod 'pending-0' .* is Pending, not Running"):
        backups.backup_now(stuck)
    assert not settings.backups_dir.exists() or not list(settings.backups_dir.iterdir())


BIG_ROW_MIB = 100


@pytest.mark.parametrize("lab", [shipped_postgres_memory_limit()], indirect=True)
def test_a_100_mib_field_restores_and_a_server_too_small_says_why(lab, core_v1):
    """Seen: restoring one 100 MiB bytea value got the server process OOM-killed under the
    manifests' 1Gi, and the message said "fix the dump"."""
    settings, runner = lab
    psql(runner, "CREATE TABLE big (id int PRIMARY KEY, data bytea)")
    rows = BIG_ROW_MIB * 1024 * 1024 // 16  # 16 bytes of md5 each
    psql(
        runner,
        "INSERT INTO big SELECT 1, decode(string_agg(md5(g::text), ''), 'hex') "
        f"FROM generate_series(1, {rows}) g",
    )
    digest = psql(runner, "SELECT length(data) || ':' || md5(data) FROM big")
    assert digest.startswith(f"{BIG_ROW_MIB * 1024 * 1024}:")
    path, _ = backups.backup_now(settings)
    # The whole dump reads back in the pod: the backup side of the big row is sound.
    checked = backups.verify_file(settings, path, reader="pod")
    assert any("full read" in c for c in checked.checks)
    psql(runner, "UPDATE big SET data = 'changed'; CREATE TABLE made_later (x int)")

    # On the limit the manifests ship: restored, byte for byte, and the server never restarted.
    started = psql(runner, "SELECT pg_postmaster_start_time()")
    session = backups.plan_restore(settings, file=path, from_daemon=None, safety_backup=False).work
    backups.run_restore(session)
    assert psql(runner, "SELECT length(data) || ':' || md5(data) FROM big") == digest
    assert psql(runner, "SELECT to_regclass('made_later') IS NULL") == "t"
    assert psql(runner, "SELECT pg_postmaster_start_time()") == started  # no crash recovery

    # A server too small for that row: postgres-0 again, with a 400Mi limit.
    namespace = settings.namespace
    core_v1.delete_namespaced_pod("postgres-0", namespace, grace_period_seconds=0)
    wait_until(
        lambda: (
            "postgres-0"
            not in {p.metadata.name for p in core_v1.list_namespaced_pod(namespace).items}
        ),
        timeout=120,
        what="postgres-0 gone",
    )
    core_v1.create_namespaced_pod(namespace, _postgres_pod(_image(), "harbor-regcred", "400Mi"))

    def ready() -> bool:
        pod = core_v1.read_namespaced_pod("postgres-0", namespace)
        return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))

    wait_until(ready, timeout=180, what="postgres-0 (400Mi) ready")
    runner = PodExec(resolve_target(settings), "postgres-0")
    psql(runner, "CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (7)")
    before = plain_dump(runner)
    result = run_inv(settings, "backup.restore", "--file", str(path), "--yes")
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    line = errors[0]
    assert "killed" in line and "out of memory" in line and "postgres 400Mi" in line, line
    assert "resources.limits.memory" in line and "fix the dump" not in line
    assert "the safety backup taken before is" in line
    wait_until(
        lambda: (
            runner.run(pg_command("pg_isready", "-h", "127.0.0.1"), check=False).returncode == 0
        ),
        timeout=120,
        what="the server back after crash recovery",
    )
    assert plain_dump(runner) == before  # nothing lost


def test_an_old_scripts_powershell_dump_restores_on_the_cluster(lab):
    """backup-now.ps1's file (pg_dump through Windows PowerShell 5.1's `>`: UTF-16 LE, CRLF,
    code page 850) is refused by restore with the command that fixes it, imported, and
    restored with the original's data: non-ASCII, tabs, backslashes, newlines."""
    from tests.support.windows import powershell51_redirect

    settings, runner = lab
    psql(
        runner,
        "INSERT INTO student (name, age) VALUES ('Jürgen Größe € 😀', 30), "
        "(E'tab\\there back\\\\slash', 31), (E'two\\nlines\\r\\nand cr', 32)",
    )
    original = plain_dump(runner)
    before = fingerprint(runner)
    dumped = io.BytesIO()  # as the old script: kubectl exec ... pg_dump > backup.sql
    runner.run(pg_command("pg_dump", "--format=plain", "-d", "studentdb"), stdout=dumped)
    old = settings.backups_dir.parent / "backup-20250203-1130.sql"
    old.write_bytes(powershell51_redirect(dumped.getvalue()))

    refused = run_inv(settings, "backup.restore", "--file", str(old), "--yes")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"inv backup.import {old}" in refused.stderr and "UTF-16 LE" in refused.stderr

    imported = inv(
        "backup.import",
        str(old),
        "--backups-dir",
        str(settings.backups_dir),
        env=clean_env(COLUMNS="250"),
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "code page 850" in imported.stdout
    made = settings.backups_dir / "backup-20250203-1130-imported.sql"

    psql(runner, "DELETE FROM student WHERE id % 2 = 0; UPDATE student SET name = 'changed'")
    done = run_inv(settings, "backup.restore", "--file", str(made), "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fingerprint(runner) == before
    assert plain_dump(runner) == original
    assert "Jürgen Größe € 😀" in psql(runner, "SELECT name FROM student WHERE age = 30")
