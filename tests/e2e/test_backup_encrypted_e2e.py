"""Encrypted backups on the real lab cluster: backup.now → restore, and the daemon's own
age-encrypted dump restored with --from-daemon (decrypted on this machine)."""

from __future__ import annotations

import io
import os
import shlex

import pytest

from ops import agecrypt, backups
from ops.backups.daemon import list_daemon
from ops.backups.files import BackupInfo, sidecar_of
from ops.backups.pods import daemon_runner
from ops.config import load_settings
from ops.errors import BackupKeyError
from tests.e2e import test_backup_e2e as plain_e2e
from tests.e2e import test_manifests_e2e as manifests_e2e
from tests.manifests.render import find
from tests.support.inv import clean_env, run_inv

pytestmark = pytest.mark.e2e

lab = plain_e2e.lab  # the same namespace: postgres-0 (seeded) and the backup daemon
fingerprint = plain_e2e.fingerprint
psql = plain_e2e.psql
dynamic = manifests_e2e.dynamic  # the manifests' tests' DynamicClient fixture
MARKER = "Ciphertext-Only-Marker-Row-8086"


@pytest.fixture
def keyed(lab, tmp_path):
    """The lab's settings with a fresh key pair: recipients set, identity in a file."""
    settings, runner = lab
    pair = agecrypt.generate()
    identity = tmp_path / "identity.txt"
    agecrypt.write_identity_file(identity, pair)
    keyed = load_settings(
        {
            "context": settings.context,
            "namespace": settings.namespace,
            "backups_dir": str(settings.backups_dir),
            "backup_recipients": (pair.recipient,),
            "backup_identity_file": str(identity),
            # uncompressed, so that a marker row absent from a file proves the encryption
            # (zlib, the default level 1, would hide it as well)
            "backup_compression": 0,
        }
    )
    return keyed, runner, pair


def test_encrypted_backup_restores_the_rows_exactly(keyed):
    settings, runner, pair = keyed
    psql(runner, f"INSERT INTO student (name, age) VALUES ('{MARKER}', 42)")
    before = fingerprint(runner)

    path, info = backups.backup_now(settings)

    assert path.name.endswith(".dump.age") and info.recipients == (pair.recipient,)
    data = path.read_bytes()
    assert agecrypt.is_encrypted(data) and MARKER.encode() not in data
    assert not [p for p in settings.backups_dir.iterdir() if p.suffix == ".part"]

    psql(runner, "DELETE FROM student WHERE id % 2 = 0; UPDATE student SET age = 1")
    assert fingerprint(runner) != before
    restore = backups.plan_restore(settings, file=path, from_daemon=None, safety_backup=True)
    lines = [(item.key, item.value) for item in restore.items]
    assert ("encryption", "age: decrypted here while it streams into the pod") in lines
    report = backups.run_restore(restore.work)
    assert fingerprint(runner) == before
    assert report.safety_backup is not None and report.safety_backup.name.endswith(".dump.age")


def test_no_encrypt_is_in_the_plan_and_said_as_the_backup_starts(keyed):
    """Recipients set, `backup.now --no-encrypt`: the dry run's plan says NONE with its
    warning, the real run warns as it starts and writes the dump in the clear; without the
    flag neither is said and the file is ciphertext."""
    settings, runner, pair = keyed
    psql(runner, f"INSERT INTO student (name, age) VALUES ('{MARKER}', 42)")
    env = clean_env(
        COLUMNS="250", MANIFEST_BACKUP_RECIPIENTS=pair.recipient, MANIFEST_BACKUP_COMPRESSION="0"
    )
    where = ["--context", settings.context, "--namespace", settings.namespace]
    where += ["--backups-dir", str(settings.backups_dir)]
    warning = "--no-encrypt: this backup holds the data in the clear"

    def backup_now(*flags: str) -> str:
        result = run_inv("backup.now", *where, *flags, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout + result.stderr

    planned = backup_now("--no-encrypt", "--dry-run")
    assert warning in planned and "NONE (--no-encrypt)" in planned, planned
    sealed_plan = backup_now("--dry-run")
    assert warning not in sealed_plan and "NONE" not in sealed_plan
    assert f"age, to 1 recipient(s): {pair.recipient}" in sealed_plan, sealed_plan
    assert not settings.backups_dir.exists() or not any(settings.backups_dir.iterdir())

    clear = backup_now("--no-encrypt")

    assert warning in clear, clear
    [dump] = settings.backups_dir.glob("*.dump")
    assert MARKER.encode() in dump.read_bytes()  # in the clear, as the warning said
    assert BackupInfo.read(sidecar_of(dump)).recipients == ()
    sealed = backup_now()
    assert warning not in sealed
    [age_file] = settings.backups_dir.glob("*.dump.age")
    assert MARKER.encode() not in age_file.read_bytes()
    assert BackupInfo.read(sidecar_of(age_file)).recipients == (pair.recipient,)


def test_restore_without_the_identity_is_one_line_and_touches_nothing(keyed, tmp_path):
    settings, runner, _ = keyed
    path, _ = backups.backup_now(settings)
    psql(runner, "UPDATE student SET age = 5 WHERE id = 1")
    before = fingerprint(runner)
    result = run_inv(
        "backup.restore",
        "--file",
        str(path),
        "--yes",
        "--context",
        settings.context,
        "--namespace",
        settings.namespace,
        env={**os.environ, "MANIFEST_BACKUP_IDENTITY_FILE": str(tmp_path / "nowhere.txt")},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "nowhere.txt does not exist" in result.stderr
    assert fingerprint(runner) == before
    no_identity = load_settings(
        {
            "context": settings.context,
            "namespace": settings.namespace,
            "backups_dir": str(settings.backups_dir),
            "secrets_dir": str(tmp_path / "empty-secrets"),
        }
    )
    with pytest.raises(BackupKeyError, match="no identity is configured"):
        backups.plan_restore(no_identity, file=path, from_daemon=None)


def test_the_daemons_encrypted_dump_restores_from_daemon(keyed):
    settings, runner, pair = keyed
    before = fingerprint(runner)
    plain_e2e._wait_for_daemon(settings)
    daemon = daemon_runner(settings)
    # As the ConfigMap backup-recipients would mount it (the test's daemon has no mount).
    script = (
        f"printf '# team\\n%s\\n' {shlex.quote(pair.recipient)} > /tmp/recipients.txt && "
        "BACKUP_RECIPIENTS_FILE=/tmp/recipients.txt sh /scripts/backup.sh once"
    )

    def one_backup() -> bool:
        result = daemon.run(["sh", "-c", script], check=False)
        assert b"no age" not in result.stdout, "the daemon's image has no age"
        return result.returncode == 0

    plain_e2e.wait_until(one_backup, timeout=60, what="an encrypted daemon backup", interval=2)
    listed = list_daemon(daemon, check=True)
    sealed = [b for b in listed if b.name.endswith(".sql.age")]
    assert sealed and sealed[0].format == "plain, age" and sealed[0].verified == "sha256 ok"
    cat = daemon.run(["cat", f"/backups/{sealed[0].name}"])
    assert agecrypt.is_encrypted(cat.stdout) and b"student 1" not in cat.stdout

    psql(runner, "DELETE FROM student WHERE id > 10")
    session = backups.plan_restore(
        settings, file=None, from_daemon=sealed[0].name, safety_backup=False
    ).work
    backups.run_restore(session)
    assert fingerprint(runner) == before


def test_the_shipped_daemon_encrypts_with_the_recipients_configmap(
    dynamic, core_v1, namespace, kube_context, registry, tmp_path
):
    """k8s/overlays/test as shipped (read-only root, the ConfigMap mount), with a public
    key in backup-recipients: the daemon's dumps are ciphertext on the volume."""
    pair = agecrypt.generate()
    manifests_e2e.secrets_apply(namespace, kube_context, registry, tmp_path)
    manifests = [
        m
        for m in manifests_e2e.rendered("test")
        if m["metadata"]["name"] not in ("manifest-app", "manifest-app-service")
        and m["kind"] != "Ingress"
    ]
    recipients = next(
        m for m in manifests if m["kind"] == "ConfigMap" and "recipients.txt" in m["data"]
    )
    recipients["data"]["recipients.txt"] += f"{pair.recipient}\n"
    assert find(manifests, "Deployment", "postgres-backup")
    manifests_e2e.apply(dynamic, manifests, namespace, dry_run=False)

    backup = "app.kubernetes.io/name=postgres-backup"
    log: dict[str, str] = {}

    def sealed_backup() -> bool:
        pods = core_v1.list_namespaced_pod(namespace, label_selector=backup).items
        running = [p for p in pods if p.status.phase == "Running"]
        if not running:
            return False
        log["text"] = core_v1.read_namespaced_pod_log(running[0].metadata.name, namespace)
        return " backup ok file=continuous-" in log["text"]

    manifests_e2e.wait_for(
        sealed_backup,
        timeout=240,
        what="the daemon's first encrypted backup",
        explain=lambda: manifests_e2e.pod_problem(core_v1, namespace, backup),
    )
    assert "encryption=age recipients=1" in log["text"]
    assert ".sql.age bytes=" in log["text"]

    settings = load_settings({"context": kube_context, "namespace": namespace})
    daemon = daemon_runner(settings)
    (name,) = [b.name for b in list_daemon(daemon, check=True) if b.verified == "sha256 ok"][:1]
    assert name.endswith(".sql.age")
    data = daemon.run(["cat", f"/backups/{name}"]).stdout
    assert agecrypt.is_encrypted(data) and b"PostgreSQL database dump" not in data
    identity = tmp_path / "identity.txt"
    agecrypt.write_identity_file(identity, pair)
    plain = agecrypt.check_stream(io.BytesIO(data), agecrypt.read_identities(identity), name=name)
    assert b"PostgreSQL database dump complete" in plain.tail
