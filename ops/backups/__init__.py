"""Backups you can trust: dump, verify, restore, list, and ship to the backup daemon.

Every function takes a ``CommandRunner`` for where the PostgreSQL tools run: ``PodExec``
(the postgres pod, over the exec API) for the tasks, ``LocalRunner`` (a local subprocess)
for tests and local tools. So the file handling, hashing and format checks below are the
same code whichever way the bytes arrive.

Commands run with the pod's own credentials: the shell in the pod expands
``$POSTGRES_USER``/``$POSTGRES_PASSWORD``; no value crosses the wire or shows in a plan.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. Loaded on first use (PEP 562), so that `inv --list`, which
# imports every task module, does not import the whole backup library and the exec layer.
_HOME = {
    "prune_local": "files",
    "BackupListing": "operations",
    "DaemonUpload": "operations",
    "backup_now": "operations",
    "backup_plan": "operations",
    "BackupWork": "operations",
    "drill_in_pod": "operations",
    "list_all": "operations",
    "prune": "operations",
    "prune_plan": "operations",
    "PruneWork": "operations",
    "plan_of_delete": "operations",
    "to_daemon": "operations",
    "to_daemon_plan": "operations",
    "upload": "operations",
    "UploadWork": "operations",
    "verify_file": "operations",
    "plan_restore": "session",
    "run_restore": "session",
}

if TYPE_CHECKING:
    from ops.backups.files import prune_local
    from ops.backups.operations import (
        BackupListing,
        BackupWork,
        DaemonUpload,
        PruneWork,
        UploadWork,
        backup_now,
        backup_plan,
        drill_in_pod,
        list_all,
        plan_of_delete,
        prune,
        prune_plan,
        to_daemon,
        to_daemon_plan,
        upload,
        verify_file,
    )
    from ops.backups.session import plan_restore, run_restore


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"ops.backups.{home}"), name)


__all__ = [
    "BackupListing",
    "BackupWork",
    "DaemonUpload",
    "PruneWork",
    "UploadWork",
    "backup_now",
    "backup_plan",
    "drill_in_pod",
    "list_all",
    "plan_of_delete",
    "plan_restore",
    "prune",
    "prune_local",
    "prune_plan",
    "run_restore",
    "to_daemon",
    "to_daemon_plan",
    "upload",
    "verify_file",
]
