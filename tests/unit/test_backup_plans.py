"""The backup tasks' plans are data (issue 13): lines, the typed confirmation, and what
``carry_out`` does with them — shown, asked, acted on or not."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from ops.backups.daemon import DeletePlan
from ops.backups.files import ListedBackup
from ops.backups.operations import plan_of_delete
from ops.execstream import LocalRunner
from ops.plan import Ask
from ops.tasks.common import carry_out
from tests.support.inv import clean_env, run_inv
from tests.unit.test_legacy_dumps import ORIGINAL, POWERSHELL51


def delete_plan() -> DeletePlan:
    upload = ListedBackup(
        name="studentdb-upload.dump",
        where="daemon",
        size=2048,
        modified=datetime(2026, 11, 26, 7, 0, tzinfo=UTC),
        format="custom",
        verified="sha256 ok",
    )
    return DeletePlan(where="pod/postgres-backup-0", backups=(upload,))


def test_the_prune_plan_names_what_goes_and_asks_for_delete():
    plan = plan_of_delete(delete_plan(), LocalRunner())
    assert plan.title == "backup.prune"
    assert [(i.key, i.value) for i in plan.items] == [
        ("delete from", "pod/postgres-backup-0:/backups"),
        ("studentdb-upload.dump", "2.0 KiB, dumped 2026-11-26 07:00 UTC"),
        ("and", "each one's .sha256 sidecar; local backups are not touched"),
    ]
    assert plan.ask == Ask(prompt="Delete 1 backup(s) for good? Type 'delete':", expected="delete")


def test_the_prune_plan_is_carried_out_only_when_confirmed(monkeypatch, capsys):
    plan = plan_of_delete(delete_plan(), LocalRunner())
    done: list[str] = []

    def act(p):
        done.extend(b.name for b in p.work.delete.backups)
        return done

    assert carry_out(plan, act, dry_run=True, yes=True) is None
    assert "backup.prune would:" in capsys.readouterr().out and done == []
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    with pytest.raises(Exit) as refused:
        carry_out(plan, act, dry_run=False)
    assert refused.value.code == 1 and done == []
    monkeypatch.setattr("builtins.input", lambda prompt: "delete")
    assert carry_out(plan, act, dry_run=False) == ["studentdb-upload.dump"]


def fake_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose context ``manifest-lab`` points at a closed port: a plan resolves
    it, nothing may connect."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: manifest-lab\n"
        "clusters:\n- name: lab\n  cluster:\n    server: https://127.0.0.1:1\n"
        "users:\n- name: u\n  user:\n    token: not-a-real-token\n"
        "contexts:\n- name: manifest-lab\n  context:\n    cluster: lab\n    user: u\n",
        encoding="utf-8",
    )
    return kubeconfig


def test_backup_now_plans_its_file_and_warns_when_it_leaves_data_in_the_clear(tmp_path):
    from ops import agecrypt
    from ops.backups.operations import backup_plan
    from ops.config import load_settings

    kubeconfig = fake_kubeconfig(tmp_path)
    recipient = agecrypt.generate().recipient
    flags = {
        "kubeconfig": str(kubeconfig),
        "context": "manifest-lab",
        "backups_dir": str(tmp_path / "backups"),
    }
    environ = {"MANIFEST_BACKUP_RECIPIENTS": recipient}
    settings = load_settings(flags, environ=environ)
    sealed = backup_plan(settings)
    lines = {i.key: i.value for i in sealed.items}
    assert sealed.title == "backup.now" and sealed.warnings == () and sealed.ask is None
    assert lines["file"].endswith(".dump.age") and recipient in lines["encryption"]
    clear = backup_plan(settings, encrypt=False)
    assert clear.warnings == ("--no-encrypt: this backup holds the data in the clear",)
    assert dict((i.key, i.value) for i in clear.items)["encryption"].startswith("NONE")
    assert clear.work.encrypt is False and not (tmp_path / "backups").exists()


def test_to_daemon_plans_the_checked_file_and_its_place_and_asks_nothing(tmp_path, capsys):
    from ops.backups.operations import to_daemon_plan
    from ops.config import load_settings

    dump = tmp_path / "studentdb.sql"
    dump.write_bytes(ORIGINAL)
    flags = {"kubeconfig": str(fake_kubeconfig(tmp_path)), "context": "manifest-lab"}
    settings = load_settings(flags, environ={})
    plan = to_daemon_plan(settings, dump, "upload.sql")
    assert plan.title == "backup.to-daemon" and plan.ask is None and plan.warnings == ()
    assert [(i.key, i.value) for i in plan.items] == [
        ("context", "manifest-lab"),
        ("namespace", "development"),
        ("daemon", "Deployment postgres-backup, /backups/upload.sql"),
        ("file", f"{dump} ({len(ORIGINAL)} B)"),
        ("checked", "plain format; plain dump ends with pg_dump's trailer"),
        ("then", "check sha256 in the pod; sh /scripts/backup.sh prune"),
    ]
    assert plan.work.name == "upload.sql" and plan.work.checked.info is None
    sent: list[str] = []
    assert carry_out(plan, lambda p: sent.append(p.work.name), dry_run=True) is None
    assert sent == [] and "backup.to-daemon would:" in capsys.readouterr().out
    carry_out(plan, lambda p: sent.append(p.work.name), dry_run=False, announce=False)
    assert sent == ["upload.sql"] and capsys.readouterr().out == ""


def test_to_daemon_dry_run_from_the_command_line_checks_the_file_first(tmp_path):
    cut = tmp_path / "cut.sql"
    cut.write_bytes(ORIGINAL[:-60])  # no 'dump complete' trailer
    good = tmp_path / "good.sql"
    good.write_bytes(ORIGINAL)
    env = clean_env(KUBECONFIG=str(fake_kubeconfig(tmp_path)))
    refused = run_inv("backup.to-daemon", "--file", str(cut), "--dry-run", env=env, cwd=tmp_path)
    assert refused.returncode == 3 and "cut short" in refused.stderr, refused.stderr
    planned = run_inv("backup.to-daemon", "--file", str(good), "--dry-run", env=env, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.startswith("backup.to-daemon would:")
    assert "postgres-backup, /backups/good.sql" in planned.stdout
    assert planned.stdout.rstrip().endswith("Dry run: nothing was changed.")


def test_keygen_plans_the_files_it_writes_and_warns_where_it_cannot_add_the_key(tmp_path):
    from ops import backupkeys
    from ops.config import load_settings

    settings = load_settings({"secrets_dir": str(tmp_path)}, environ={})
    plan = backupkeys.keygen_plan(settings)
    assert plan.title == "backup.keygen" and plan.ask is None and plan.warnings == ()
    assert [(i.key, i.value) for i in plan.items] == [
        (str(tmp_path / "backup_identity.txt"), "write the private key (mode 0600)"),
        (str(tmp_path / "backup_recipients.txt"), "add its public key (backups encrypt to it)"),
    ]
    environ = {"MANIFEST_BACKUP_RECIPIENTS": agecrypt_recipient()}
    elsewhere = backupkeys.keygen_plan(
        load_settings({"secrets_dir": str(tmp_path)}, environ=environ)
    )
    assert len(elsewhere.items) == 1 and elsewhere.work.recipients_file is None
    assert elsewhere.warnings == (backupkeys.RECIPIENTS_ELSEWHERE,)
    assert carry_out(plan, backupkeys.keygen, dry_run=True) is None
    assert list(tmp_path.iterdir()) == []
    pair = carry_out(plan, backupkeys.keygen, dry_run=False)
    assert pair is not None
    assert (tmp_path / "backup_recipients.txt").read_text() == f"{pair.recipient}\n"


def agecrypt_recipient() -> str:
    from ops import agecrypt

    return agecrypt.generate().recipient


def test_import_plans_what_it_reads_and_writes_and_refuses_a_bad_name_first(tmp_path, capsys):
    from ops.backups.legacy import import_plan, import_planned
    from ops.errors import BackupError

    old = tmp_path / "old.sql"
    old.write_bytes(POWERSHELL51)
    backups_dir = tmp_path / "backups"
    plan = import_plan(old, backups_dir=backups_dir)
    assert plan.title == "backup.import" and plan.ask is None and plan.warnings == ()
    assert [(i.key, i.value) for i in plan.items] == [
        ("read", f"{old} ({plan.work.conversion.describe()})"),
        ("write", f"{backups_dir / 'old-imported.sql'}: UTF-8 with LF, with a .json sidecar"),
        ("check", "pg_dump's header and its 'dump complete' trailer"),
    ]
    assert "code page 850" in plan.items[0].value
    with pytest.raises(BackupError, match="not a usable backup file name"):
        import_plan(old, backups_dir=backups_dir, name="../x.sql")
    assert carry_out(plan, import_planned, dry_run=True) is None
    assert "backup.import would:" in capsys.readouterr().out and not backups_dir.exists()
    done = carry_out(plan, import_planned, dry_run=False, announce=False)
    assert done is not None and done.path.read_bytes() == ORIGINAL
