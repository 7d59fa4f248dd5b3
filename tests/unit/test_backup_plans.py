"""The backup tasks' plans are data (issue 13): lines, the typed confirmation, and what
``carry_out`` does with them — shown, asked, acted on or not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from invoke.exceptions import Exit

from ops.backups.daemon import DeletePlan
from ops.backups.files import ListedBackup
from ops.backups.operations import plan_of_delete
from ops.execstream import LocalRunner
from ops.plan import Ask
from ops.tasks.common import carry_out


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


def test_backup_now_plans_its_file_and_warns_when_it_leaves_data_in_the_clear(tmp_path):
    from ops import agecrypt
    from ops.backups.operations import backup_plan
    from ops.config import load_settings

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: manifest-lab\n"
        "clusters:\n- name: lab\n  cluster:\n    server: https://127.0.0.1:1\n"
        "users:\n- name: u\n  user:\n    token: not-a-real-token\n"
        "contexts:\n- name: manifest-lab\n  context:\n    cluster: lab\n    user: u\n",
        encoding="utf-8",
    )
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
