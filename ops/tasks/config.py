"""`inv config`: the effective settings and where each came from."""

from __future__ import annotations

from invoke.context import Context

from ops import console
from ops.config import describe
from ops.tasks.common import ops_task, settings_for


@ops_task
def show(c: Context) -> None:
    """Show every setting, its value (secrets masked) and where it came from."""
    settings = settings_for()
    rows = [(r.name, r.value, r.source, r.env_var) for r in describe(settings)]
    console.table("Effective settings", ["setting", "value", "source", "environment"], rows)
