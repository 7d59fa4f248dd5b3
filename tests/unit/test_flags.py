"""Flags: one meaning per short flag across every task, and errors name flags that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from invoke.collection import Collection

from ops.tasks.common import SHORT_FLAGS
from tests.support.inv import clean_env
from tests.support.inv import run_inv as inv

ROOT = Path(__file__).resolve().parents[2]

# Flags of other programs named in ops/ (command lines we build, not flags of ours).
FOREIGN_FLAGS = {
    # pg_dump / pg_restore / psql command lines and messages about them
    "--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error",
    "--format", "--compress", "--no-password",
    # BuildKit syntax our Dockerfiles avoid; Invoke's own core flags
    "--mount", "--list", "--debug", "--help",
    # asking the age CLI which it is
    "--version",
}  # fmt: skip


def all_tasks() -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    import tasks

    collection: Collection = tasks.ns
    return {name: collection[name] for name in collection.task_names}


def test_every_task_documents_its_flags() -> None:
    """Every flag of every task in the collection has its help text (``inv --help TASK``)."""
    tasks = all_tasks()
    assert {"config", "backup.restore", "secrets.apply", "pipeline"} <= set(tasks)
    undocumented = sorted(
        f"inv {name} --{argument.name.replace('_', '-')}"
        for name, task in tasks.items()
        for argument in task.get_arguments()  # type: ignore[attr-defined]
        if not (argument.help or "").strip()
    )
    assert not undocumented, "flags without help=: " + ", ".join(undocumented)


def test_every_short_flag_has_one_meaning_in_every_task() -> None:
    meanings: dict[str, set[str]] = defaultdict(set)
    for task in all_tasks().values():
        for argument in task.get_arguments():  # type: ignore[attr-defined]
            longs = [n for n in argument.names if len(n) > 1]
            for short in (n for n in argument.names if len(n) == 1):
                meanings[short] |= set(longs)
    assert meanings, "no short flag at all: the table is not applied"
    for short, longs in meanings.items():
        assert len(longs) == 1, f"-{short} means {sorted(longs)}"
        assert SHORT_FLAGS[next(iter(longs)).replace("-", "_")] == short


def test_flags_named_in_messages_exist() -> None:
    """Every --flag written in ops/ is a flag of one of our tasks (or a known foreign one)."""
    ours = {
        "--" + name
        for task in all_tasks().values()
        for argument in task.get_arguments()  # type: ignore[attr-defined]
        for name in argument.names
        if len(name) > 1
    }
    named = {
        (path.relative_to(ROOT), flag)
        for path in (ROOT / "ops").rglob("*.py")
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", path.read_text(encoding="utf-8"))
    }
    unknown = sorted(f"{path}: {flag}" for path, flag in named if flag not in ours | FOREIGN_FLAGS)
    assert not unknown


def run_inv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    env.update(COLUMNS="200", KUBECONFIG=str(cwd / "no-kubeconfig"))
    (cwd / ".env").write_bytes(b"")
    return inv(*args, env=env, cwd=cwd, timeout=60)


def test_short_namespace_flag_in_restore(tmp_path: Path) -> None:
    """Seen: `inv backup.restore -n acc-1 --file F` failed with "No idea what 'acc-1' is!"."""
    result = run_inv("backup.restore", "-n", "acc-1", "--file", "missing.dump", cwd=tmp_path)
    assert "No idea" not in result.stderr
    assert "missing.dump" in result.stderr and result.returncode == 3


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["backup.now", "--keep", "0"], "--keep"),
        (["backup.now", "--compression", "12"], "--compression"),
        (["backup.now", "--format", "zip"], "--format"),
        (["rollout.status", "--timeout", "-1"], "--timeout"),
    ],
)
def test_an_invalid_flag_value_names_that_flag(args: list[str], flag: str, tmp_path: Path) -> None:
    result = run_inv(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"(from {flag})" in lines[0] and f"Fix {flag}." in lines[0]
