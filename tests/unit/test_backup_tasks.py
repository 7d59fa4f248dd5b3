"""The backup tasks from the command line: one clear line and an exit code, never a traceback."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from ops.backups.files import BackupInfo
from tests.support.inv import run_inv
from tests.unit.test_backup_files import custom_header

ROOT = Path(__file__).resolve().parents[2]


def inv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_inv(*args, cwd=cwd, timeout=60)


def backup_file(tmp_path: Path, *, sha256: str | None = None) -> Path:
    content = custom_header() + bytes(range(256)) * 4
    path = tmp_path / "studentdb-manifest-lab-20261126-070000.dump"
    path.write_bytes(content)
    BackupInfo(
        file=path.name,
        sha256=sha256 or hashlib.sha256(content).hexdigest(),
        size=len(content),
        database="studentdb",
        format="custom",
        compression="none",
        server_version="15.18",
        source_context="manifest-lab",
        source_namespace="development",
        source_pod="postgres-0",
        created="2026-11-26T07:00:00+00:00",
    ).write(path.with_name(path.name + ".json"))
    return path


def one_error_line(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], result.stderr


def test_verify_of_a_missing_file(tmp_path):
    one_error_line(inv("backup.verify", str(tmp_path / "nope.dump")), 3, "does not exist")


def test_verify_of_an_altered_file(tmp_path):
    path = backup_file(tmp_path, sha256="0" * 64)
    one_error_line(inv("backup.verify", str(path), "--reader", "skip"), 3, "sha256 differs")


def test_verify_of_a_good_file_lists_its_checks(tmp_path):
    result = inv("backup.verify", str(backup_file(tmp_path)), "--reader", "skip")
    assert result.returncode == 0, result.stderr
    assert "sha256 matches the sidecar" in result.stdout
    assert "full read skipped" in result.stdout


def test_restore_needs_exactly_one_source(tmp_path):
    one_error_line(inv("backup.restore", "--yes"), 2, "--file FILE or --from-daemon NAME")


def test_restore_rejects_a_bad_file_before_asking_the_cluster(tmp_path):
    # (an altered file of the right length is refused as it streams, before COMMIT: see
    # tests/integration test_a_corrupt_file_of_the_right_length_never_changes_the_database)
    path = backup_file(tmp_path)
    with path.open("ab") as f:
        f.write(b"more")
    one_error_line(
        inv("backup.restore", "--file", str(path), "--yes", "--context", "no-such-context"),
        3,
        "its sidecar says",
    )


def backup_tasks() -> list[str]:
    """Every task of the ``backup`` namespace, as the collection has them."""
    from ops.tasks.backup import ns

    return sorted(ns.task_names)


@pytest.mark.parametrize("task", backup_tasks())
def test_every_backup_task_shows_its_help(task):
    result = inv("--help", f"backup.{task}")
    assert result.returncode == 0, result.stderr
    if task in ("now", "to-daemon", "restore"):
        assert "--dry-run" in result.stdout
