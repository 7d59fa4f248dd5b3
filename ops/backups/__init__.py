"""Backups you can trust: dump, verify, restore, list, and ship to the backup daemon.

Every function takes a ``CommandRunner`` for where the PostgreSQL tools run: ``PodExec``
(the postgres pod, over the exec API) for the tasks, ``LocalRunner`` (a local subprocess)
for tests and local tools. So the file handling, hashing and format checks below are the
same code whichever way the bytes arrive.

Commands run with the pod's own credentials: the shell in the pod expands
``$POSTGRES_USER``/``$POSTGRES_PASSWORD``; no value crosses the wire or shows in a plan.
"""

from ops.backups.files import prune_local
from ops.backups.operations import (
    BackupListing,
    DaemonUpload,
    backup_now,
    backup_plan,
    drill_in_pod,
    list_all,
    prune,
    prune_plan,
    to_daemon,
    to_daemon_plan,
    verify_file,
)
from ops.backups.session import prepare_restore, run_restore

__all__ = [
    "BackupListing",
    "DaemonUpload",
    "backup_now",
    "backup_plan",
    "drill_in_pod",
    "list_all",
    "prepare_restore",
    "prune",
    "prune_local",
    "prune_plan",
    "run_restore",
    "to_daemon",
    "to_daemon_plan",
    "verify_file",
]
