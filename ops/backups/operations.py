"""What the backup tasks do, given the settings: back up now, verify, drill, ship to the
daemon, list. Each finds its pods (``ops.backups.pods``) and calls the data path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ops import agecrypt, backupkeys
from ops.backups.daemon import (
    DAEMON_DIR,
    DeletePlan,
    delete_from_daemon,
    list_daemon,
    plan_delete,
    prune_daemon,
    send_to_daemon,
)
from ops.backups.dump import take_backup
from ops.backups.files import (
    AGE_SUFFIX,
    BackupInfo,
    ListedBackup,
    ProgressFactory,
    Verification,
    backup_name,
    list_local,
    no_progress,
    sha256_of,
    sidecar_of,
    verify_backup,
)
from ops.backups.pods import daemon_runner, full_reader_for, pod_source
from ops.backups.restore import DrillReport, drill
from ops.config import Settings
from ops.console import human_size
from ops.errors import CorruptBackup, OpsError
from ops.execstream import CommandRunner
from ops.pgformat import DumpFormat
from ops.plan import Ask, Plan, items


@dataclass(frozen=True, kw_only=True)
class DaemonUpload:
    """A backup put into the daemon's volume: where, its sha256 as the pod computed it,
    and what the daemon's retention said afterwards."""

    where: str
    sha256: str
    pruned: str


@dataclass(frozen=True, kw_only=True)
class BackupListing:
    """Local and daemon backups; ``daemon_problem`` says why the daemon's are missing."""

    backups: list[ListedBackup]
    daemon_problem: str = ""
    daemon_error: OpsError | None = None  # the error behind daemon_problem


def backup_recipients(settings: Settings, *, encrypt: bool = True) -> list[str]:
    """The keys ``backup.now`` encrypts to (none: not encrypted)."""
    return backupkeys.recipients(settings) if encrypt else []


def _encryption_line(settings: Settings, recipients: Sequence[str], encrypt: bool) -> str:
    if recipients:
        return f"age, to {len(recipients)} recipient(s): {', '.join(recipients)}"
    if not encrypt and settings.backup_recipients:
        return "NONE (--no-encrypt): the file holds the data in the clear"
    return "none (no backup_recipients set; `inv backup.keygen` makes a key)"


@dataclass(frozen=True, kw_only=True)
class BackupWork:
    """What ``backup.now`` acts with: the settings and whether to encrypt."""

    settings: Settings
    encrypt: bool


def backup_plan(settings: Settings, *, encrypt: bool = True) -> Plan[BackupWork]:
    """backup.now's plan: where the dump comes from and goes, its encryption; the warning
    when --no-encrypt leaves a backup in the clear although recipients are set."""
    from ops.kube import resolve_target

    recipients = backup_recipients(settings, encrypt=encrypt)
    target = resolve_target(settings)
    fmt: DumpFormat = settings.backup_format
    name = backup_name(settings.database, target.context, fmt, datetime.now(UTC))
    if recipients:
        name += AGE_SUFFIX
    clear = not encrypt and bool(settings.backup_recipients)
    return Plan(
        title="backup.now",
        items=items(
            ("context", target.context),
            ("namespace", target.namespace),
            ("pod", settings.postgres_pod),
            ("database", settings.database),
            (
                "format",
                fmt + (f", compression {settings.backup_compression}" if fmt == "custom" else ""),
            ),
            ("file", str(settings.backups_dir / name)),
            ("encryption", _encryption_line(settings, recipients, encrypt)),
            ("keep", f"newest {settings.backup_keep} local backups"),
        ),
        warnings=("--no-encrypt: this backup holds the data in the clear",) if clear else (),
        work=BackupWork(settings=settings, encrypt=encrypt),
    )


def backup_now(
    settings: Settings, *, progress: ProgressFactory = no_progress, encrypt: bool = True
) -> tuple[Path, BackupInfo]:
    recipients = backup_recipients(settings, encrypt=encrypt)  # a bad key: before the pod
    return take_backup(
        pod_source(settings),
        backups_dir=settings.backups_dir,
        fmt=settings.backup_format,
        compression=settings.backup_compression,
        progress=progress,
        recipients=recipients,
    )


def verify_file(
    settings: Settings,
    path: Path,
    *,
    reader: str = "auto",
    require_sidecar: bool = True,
    progress: ProgressFactory = no_progress,
) -> Verification:
    # An encrypted file without an identity is still checked against its sidecar.
    encrypted = path.is_file() and agecrypt.file_is_encrypted(path)
    return verify_backup(
        path,
        full_reader=lambda: full_reader_for(settings, reader),
        progress=progress,
        require_sidecar=require_sidecar,
        identities=backupkeys.identities_if_any(settings) if encrypted else None,
    )


def drill_in_pod(
    settings: Settings, path: Path, *, progress: ProgressFactory = no_progress
) -> DrillReport:
    identities = backupkeys.identities_for(settings, path)
    return drill(path, pod_source(settings), progress=progress, identities=identities)


@dataclass(frozen=True, kw_only=True)
class UploadWork:
    """What ``upload`` sends: the local backup, checked, and its name in the daemon's folder."""

    settings: Settings
    path: Path
    name: str
    checked: Verification


def to_daemon_plan(
    settings: Settings, path: Path, name: str, *, progress: ProgressFactory = no_progress
) -> Plan[UploadWork]:
    """backup.to-daemon's plan: the file checked here first (sidecar if any, format, its
    end), then where it goes in the daemon's volume and what is checked there."""
    from ops.kube import resolve_target

    checked = verify_backup(path, full_reader=None, progress=progress, require_sidecar=False)
    target = resolve_target(settings)
    return Plan(
        title="backup.to-daemon",
        items=items(
            ("context", target.context),
            ("namespace", target.namespace),
            ("daemon", f"Deployment {settings.backup_daemon}, {DAEMON_DIR}/{name}"),
            ("file", f"{path} ({human_size(checked.stat[0])})"),
            ("checked", "; ".join(checked.checks)),
            ("then", "check sha256 in the pod; sh /scripts/backup.sh prune"),
        ),
        work=UploadWork(settings=settings, path=path, name=name, checked=checked),
    )


def upload(plan: Plan[UploadWork], *, progress: ProgressFactory = no_progress) -> DaemonUpload:
    """Carry out backup.to-daemon's plan: upload, check the sha256 in the pod, prune there."""
    work = plan.work
    info = work.checked.info
    created = (
        datetime.fromisoformat(info.created)
        if info is not None
        else datetime.fromtimestamp(work.path.stat().st_mtime, UTC)
    )
    runner = daemon_runner(work.settings)
    digest = send_to_daemon(work.path, runner, name=work.name, created=created, progress=progress)
    return DaemonUpload(where=runner.where, sha256=digest, pruned=prune_daemon(runner))


def to_daemon(
    settings: Settings, path: Path, *, name: str, progress: ProgressFactory = no_progress
) -> DaemonUpload:
    """Verify locally, upload, check in the pod, prune there (plan and upload in one)."""
    return upload(to_daemon_plan(settings, path, name, progress=progress), progress=progress)


@dataclass(frozen=True, kw_only=True)
class PruneWork:
    """What ``prune`` needs: the checked backups to delete and the daemon pod's runner."""

    delete: DeletePlan
    runner: CommandRunner


def prune_plan(settings: Settings, names: Sequence[str]) -> Plan[PruneWork]:
    """What ``inv backup.prune`` would delete from the daemon's volume (checked to exist)."""
    runner = daemon_runner(settings)
    return plan_of_delete(plan_delete(runner, names), runner)


def plan_of_delete(delete: DeletePlan, runner: CommandRunner) -> Plan[PruneWork]:
    """backup.prune's plan for backups already looked up (pure): its lines and the typed
    'delete' it asks for."""
    return Plan(
        title="backup.prune",
        items=items(
            ("delete from", f"{delete.where}:{DAEMON_DIR}"),
            *(
                (b.name, f"{human_size(b.size)}, dumped {b.modified:%Y-%m-%d %H:%M} UTC")
                for b in delete.backups
            ),
            ("and", "each one's .sha256 sidecar; local backups are not touched"),
        ),
        work=PruneWork(delete=delete, runner=runner),
        ask=Ask(
            prompt=f"Delete {len(delete.backups)} backup(s) for good? Type 'delete':",
            expected="delete",
        ),
    )


def prune(plan: Plan[PruneWork]) -> list[str]:
    """Carry out backup.prune's plan: the names deleted."""
    return delete_from_daemon(plan.work.runner, plan.work.delete)


def list_all(settings: Settings, *, check: bool = False, daemon: bool = True) -> BackupListing:
    """Local and daemon backups (``check``: re-hashed, not trusted by size)."""
    listed = list_local(settings.backups_dir)
    if check:
        listed = [_rehash(settings.backups_dir, b) for b in listed]
    problem = ""
    error = None
    if daemon:
        try:
            listed += list_daemon(daemon_runner(settings), check=check)
        except OpsError as exc:
            problem, error = f"daemon backups not listed: {exc.message}", exc
    return BackupListing(backups=listed, daemon_problem=problem, daemon_error=error)


def _rehash(backups_dir: Path, listed: ListedBackup) -> ListedBackup:
    path = backups_dir / listed.name
    try:
        info = BackupInfo.read(sidecar_of(path))
    except (FileNotFoundError, CorruptBackup):
        return listed
    ok = info.size == listed.size and sha256_of(path) == info.sha256
    return ListedBackup(**{**asdict(listed), "verified": "sha256 ok" if ok else "SHA256 MISMATCH"})
