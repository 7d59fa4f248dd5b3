"""`inv --list` must not import docker or kubernetes (they cost ~200 ms of every start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["docker", "kubernetes", "requests", "psycopg"]
# Our own libraries that only a task's body needs (the backup library, the exec layer,
# age): loading them made `inv --list` 1.7x bare invoke.
OWN_HEAVY = ["ops.backups.operations", "ops.execstream", "ops.agecrypt", "pyrage"]


def imported_by(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(m for m in sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import tasks",
        "from invoke.program import Program\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        "        Program(binary='inv').run(['inv', '--list'], exit=False)\n"
        "    except SystemExit:\n"
        "        pass",
    ],
    ids=["import-tasks", "inv-list"],
)
def test_listing_tasks_imports_no_heavy_package(code: str) -> None:
    modules = imported_by(code)
    assert "ops.tasks.pipeline" in modules  # the task modules were really loaded
    assert [m for m in HEAVY if m in modules] == []
    assert [m for m in OWN_HEAVY if m in modules] == []


def test_after_a_task_the_exit_collects_nothing() -> None:
    """The shutdown's garbage collection over every imported module is skipped once a task
    ran (gc.freeze at exit), and what the task printed still arrives."""
    probe = (
        "import atexit, gc\n"
        # registered first, so it runs last: after the task's exit handler
        "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
        "from invoke.context import Context\n"
        "from ops.tasks.common import ops_task\n"
        "@ops_task\n"
        "def hello(c):\n"
        "    print('hello', end='')\n"
        "print('frozen before:', gc.get_freeze_count() > 0)\n"
        "hello(Context())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout == "frozen before: False\nhellofrozen at exit: True\n"
