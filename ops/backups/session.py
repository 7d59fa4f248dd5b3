"""A restore from the tasks: checked and planned first, run once the user agreed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from ops import agecrypt, backupkeys
from ops.backups.daemon import DAEMON_DIR, fetch_from_daemon, list_daemon
from ops.backups.dump import Source
from ops.backups.files import (
    AGE_SUFFIX,
    ProgressFactory,
    Verification,
    no_progress,
    prune_local,
    sidecar_of,
    verify_backup,
)
from ops.backups.pods import daemon_runner, memory_limits, pod_source
from ops.backups.restore import RestoreReport, cross_database_check, restore_backup
from ops.config import Settings
from ops.console import human_size
from ops.errors import CorruptBackup, ServerKilled
from ops.plan import Ask, Plan, items

_T = TypeVar("_T")


class _InBackground(Generic[_T]):
    """``fn()`` in a daemon thread; ``result()`` waits for it and re-raises its error.

    A daemon thread, not an executor: a corrupt file must be reported at once, without
    waiting for a lookup stuck on an unreachable API server.
    """

    def __init__(self, fn: Callable[[], _T]) -> None:
        self._fn = fn
        self._value: _T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:
            self._error = exc

    def result(self) -> _T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class RestoreSession:
    """A checked restore, ready to run once the user agreed to its plan."""

    source: Source
    settings: Settings
    path: Path | None
    daemon_name: str | None
    safety_backup: bool
    require_sidecar: bool
    verification: Verification | None = None
    # for an encrypted backup (never printed)
    identities: tuple[agecrypt.Identity, ...] | None = None


NO_CHECKSUM = (
    "no checksum (--no-sidecar): the file is complete and readable; whether it was altered "
    "cannot be known without its sidecar"
)


def plan_restore(
    settings: Settings,
    *,
    file: Path | None,
    from_daemon: str | None,
    require_sidecar: bool = True,
    safety_backup: bool = True,
    from_database: str | None = None,
    progress: ProgressFactory = no_progress,
) -> Plan[RestoreSession]:
    """``inv backup.restore``'s plan: everything a restore needs checked (file first, then
    the pod), the checked session as its work, the cross-database and no-checksum warnings,
    and the typed confirmation: the database's name.

    A local file is verified here — before anything touches the database. A daemon backup
    is fetched (checked in the pod and again here) by ``run_restore``, or only looked up
    on a dry run.
    """
    described: list[tuple[str, str]] = []
    warnings: list[str] = []
    verification = None
    # An encrypted backup without an identity is refused here, before anything else.
    identities = None
    if file is not None:
        identities = backupkeys.identities_for(settings, file)
    elif from_daemon is not None and from_daemon.endswith(AGE_SUFFIX):
        identities = backupkeys.identities(settings, file=from_daemon)
    # The pod's settings and kubeconfig are read while the file is checked (hashed, when it
    # has no sidecar of backup.now: hashlib releases the GIL, so on two cores the two
    # overlap). A bad file is still reported first, and nothing touches the database
    # before both are done.
    pod_lookup = _InBackground(lambda: pod_source(settings))
    if file is not None:
        verification = _verify_for_restore(
            file, require_sidecar, progress, pod=lambda: pod_lookup.result(), identities=identities
        )
        info = verification.info
        dump_database = (info.database if info else verification.header.database) or None
        described = [
            ("file", str(file)),
            ("size", human_size(file.stat().st_size)),
            ("format", verification.header.format),
            ("created", info.created if info else "unknown (no sidecar)"),
            ("source database", dump_database or "unknown"),
            ("checks", "; ".join(verification.checks)),
        ]
        if info is None:
            warnings.append(NO_CHECKSUM)
    source = pod_lookup.result()
    if file is not None:
        crossing = cross_database_check(dump_database, source.database, from_database)
        if crossing is not None:
            warnings.append(crossing)
    if from_daemon is not None:
        runner = daemon_runner(settings)
        match = [b for b in list_daemon(runner) if b.name == from_daemon]
        if not match:
            raise CorruptBackup(
                f"{from_daemon} is not in the daemon's {DAEMON_DIR}",
                hint="`inv backup.list` shows the daemon's backups.",
            )
        described = [
            ("file", f"{runner.where}:{DAEMON_DIR}/{from_daemon}"),
            ("size", human_size(match[0].size)),
            ("format", match[0].format),
            ("created", match[0].modified.isoformat(timespec="seconds")),
            ("checks", "sha256 against its .sha256 sidecar, in the pod and here, before restoring"),
        ]
    database = source.database
    return Plan(
        title="backup.restore",
        items=items(
            ("context", source.context),
            ("namespace", source.namespace),
            ("pod", source.pod),
            ("database", database),
            *described,
            *(
                [("encryption", "age: decrypted here while it streams into the pod")]
                if identities is not None
                else []
            ),
            ("safety backup", "yes, into " + str(settings.backups_dir) if safety_backup else "NO"),
            (
                "how",
                "one transaction: everything in the database is dropped, then the backup is "
                "applied, so afterwards it holds exactly the backup; on any error it stays as "
                "it was",
            ),
        ),
        warnings=tuple(warnings),
        work=RestoreSession(
            source=source,
            settings=settings,
            path=file,
            daemon_name=from_daemon,
            safety_backup=safety_backup,
            require_sidecar=require_sidecar,
            verification=verification,
            identities=tuple(identities) if identities is not None else None,
        ),
        ask=Ask(
            prompt=f"This replaces the data of {database!r}. Type the database name to go on:",
            expected=database,
        ),
    )


def _verify_for_restore(
    path: Path,
    require_sidecar: bool,
    progress: ProgressFactory,
    *,
    pod: Callable[[], Source],
    identities: Sequence[agecrypt.Identity] | None = None,
) -> Verification:
    # With a sidecar, its sha256 proves the file is what pg_dump wrote after exiting 0 (checked
    # as the file streams: the restore commits only if it matches, see _restore_stream);
    # without one, a full read (in the pod: the restoring pg_restore's own version) must.
    # An encrypted file is decrypted in full here (age authenticates every chunk).
    has_sidecar = sidecar_of(path).is_file()
    return verify_backup(
        path,
        full_reader=None if has_sidecar else lambda: pod().runner,
        progress=progress,
        require_sidecar=require_sidecar,
        identities=identities,
        decrypt_all=False,
        stream_digest=True,
    )


def run_restore(
    session: RestoreSession, *, progress: ProgressFactory = no_progress
) -> RestoreReport:
    settings = session.settings
    path = session.path
    if session.daemon_name is not None:
        path = fetch_from_daemon(
            session.daemon_name,
            daemon_runner(settings),
            backups_dir=settings.backups_dir,
            source=session.source,
            progress=progress,
        )
    assert path is not None
    try:
        report = restore_backup(
            path,
            session.source,
            full_reader=None,
            backups_dir=settings.backups_dir,
            safety_backup=session.safety_backup,
            compression=settings.backup_compression,
            require_sidecar=session.require_sidecar,
            progress=progress,
            verified=session.verification,
            identities=session.identities,
            recipients=backupkeys.recipients(settings),
        )
    except ServerKilled as exc:
        limits = memory_limits(settings, session.source.pod)
        if limits:
            exc.message += f"; memory limit of pod {session.source.pod}: {limits}"
            exc.args = (exc.message,)
        raise
    protect = [path] + ([report.safety_backup] if report.safety_backup else [])
    prune_local(settings.backups_dir, settings.backup_keep, protect=protect)
    return report
