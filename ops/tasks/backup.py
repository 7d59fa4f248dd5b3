"""backup.*: pg_dump out of the postgres pod, verify, ship to the daemon, list, restore."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops import backups, console
from ops.errors import ConfigError
from ops.tasks.common import Collection, Settings, carry_out, ops_task, settings_for

if TYPE_CHECKING:
    from ops.backups.files import BackupInfo, ListedBackup
    from ops.backups.operations import BackupWork
    from ops.plan import Plan

_WHERE = {
    "context": "Kube context (default: the kubeconfig's current one, if allowed)",
    "namespace": "Namespace of the database (default: development)",
    "pod": "The PostgreSQL pod (default: postgres-0)",
    "database": "Database (default: studentdb)",
    "backups_dir": "Local backup folder (default: backups/)",
}


def _settings(
    context: str | None,
    namespace: str | None,
    pod: str | None,
    database: str | None,
    backups_dir: str | None,
    **more: Any,
) -> Settings:
    return settings_for(
        context=context,
        namespace=namespace,
        postgres_pod=pod,
        database=database,
        backups_dir=backups_dir,
        **more,
    )


@ops_task(
    help={
        **_WHERE,
        "format": "custom (default) or plain SQL",
        "compression": "pg_dump -Fc compression 0-9 (default 0: fastest, see README)",
        "keep": "Local backups to keep, newest first (default 10)",
        "no_encrypt": "Write this backup unencrypted although backup_recipients are set",
        "dry_run": "Show what would happen; touch nothing",
    }
)
def now(
    c: Any,
    context: str | None = None,
    namespace: str | None = None,
    pod: str | None = None,
    database: str | None = None,
    backups_dir: str | None = None,
    format: str | None = None,
    compression: int | None = None,
    keep: int | None = None,
    no_encrypt: bool = False,
    dry_run: bool = False,
) -> None:
    """Back up the database now: pg_dump in the pod, streamed into backups/, verified."""
    settings = _settings(
        context,
        namespace,
        pod,
        database,
        backups_dir,
        backup_format=format,
        backup_compression=compression,
        backup_keep=keep,
    )
    plan = backups.backup_plan(settings, encrypt=not no_encrypt)
    made = carry_out(plan, _back_up, dry_run=dry_run, announce=False)
    if made is None:
        return
    path, info = made
    sealed = f", age-encrypted to {len(info.recipients)} key(s)" if info.recipients else ""
    console.success(f"{path} ({console.human_size(info.size)}, sha256 {info.sha256[:12]}…{sealed})")
    removed = backups.prune_local(settings.backups_dir, settings.backup_keep, protect=[path])
    for old in removed:
        console.info(f"  removed old backup {old.name} (keeping {settings.backup_keep})")


def _back_up(plan: Plan[BackupWork]) -> tuple[Path, BackupInfo]:
    # announce=False shows no plan before a backup (its progress shows it), so its
    # warnings are said here, as the backup starts.
    for warning in plan.warnings:
        console.warn(warning)
    work = plan.work
    return backups.backup_now(work.settings, progress=console.byte_progress, encrypt=work.encrypt)


@ops_task(
    help={
        "file": "The backup file to check",
        "drill": "Also restore it into a scratch database in the pod and compare row counts",
        "reader": "Where pg_restore reads a custom dump in full: auto, local, pod or skip",
        "no_sidecar": "Accept a file without its .json sidecar (no checksum to compare)",
        **_WHERE,
    },
    positional=["file"],
)
def verify(
    c: Any,
    file: str,
    drill: bool = False,
    reader: str = "auto",
    no_sidecar: bool = False,
    context: str | None = None,
    namespace: str | None = None,
    pod: str | None = None,
    database: str | None = None,
    backups_dir: str | None = None,
) -> None:
    """Check a backup: sha256 against its sidecar, format, a full read; --drill restores it."""
    settings = _settings(context, namespace, pod, database, backups_dir)
    result = backups.verify_file(
        settings,
        Path(file),
        reader=reader,
        require_sidecar=not no_sidecar,
        progress=console.byte_progress,
    )
    for check in result.checks:
        console.success(check)
    if drill:
        drilled = backups.drill_in_pod(settings, Path(file), progress=console.byte_progress)
        restored, live = drilled.restored, drilled.live
        rows = [
            [t, str(restored.get(t, "-")), str(live.get(t, "-")), _same(restored, live, t)]
            for t in sorted(set(restored) | set(live))
        ]
        console.table("Drill: rows per table", ["table", "in backup", "live", ""], rows)
        console.success(
            f"drill: restored {len(restored)} tables, "
            f"{sum(restored.values())} rows into a scratch database (dropped again)"
        )
    if result.info is None:
        console.warn(f"{file} is {result.summary}")
    else:
        console.success(f"{file} is {result.summary}")


def _same(a: dict[str, int], b: dict[str, int], table: str) -> str:
    return "same" if a.get(table) == b.get(table) else "differs"


@ops_task(
    help={
        "file": "Local backup to send",
        "name": "Name in the daemon's /backups (default: the file's name)",
        "dry_run": "Show what would happen; touch nothing",
        **_WHERE,
    }
)
def to_daemon(
    c: Any,
    file: str,
    name: str | None = None,
    dry_run: bool = False,
    context: str | None = None,
    namespace: str | None = None,
    pod: str | None = None,
    database: str | None = None,
    backups_dir: str | None = None,
) -> None:
    """Put a local backup into the backup daemon's volume (sha256 checked in the pod)."""
    settings = _settings(context, namespace, pod, database, backups_dir)
    path = Path(file)
    plan = backups.to_daemon_plan(settings, path, name or path.name, progress=console.byte_progress)
    sent = carry_out(
        plan,
        lambda p: backups.upload(p, progress=console.byte_progress),
        dry_run=dry_run,
        announce=False,
    )
    if sent is None:
        return
    console.success(
        f"{plan.work.name} is in {sent.where}:/backups, sha256 {sent.sha256[:12]}… checked there"
    )
    if sent.pruned:
        console.info(f"  daemon retention: {sent.pruned}")


@ops_task(
    help={
        "name": "A backup in the daemon's /backups to delete (repeatable)",
        "yes": "Do not ask; delete right away",
        "dry_run": "Show what would be deleted; touch nothing",
        **_WHERE,
    },
    iterable=["name"],
)
def prune(
    c: Any,
    name: list[str] | None = None,
    yes: bool = False,
    dry_run: bool = False,
    context: str | None = None,
    namespace: str | None = None,
    pod: str | None = None,
    database: str | None = None,
    backups_dir: str | None = None,
) -> None:
    """Delete named backups (e.g. uploads) from the daemon's volume, after a plan and a yes."""
    settings = _settings(context, namespace, pod, database, backups_dir)
    plan = backups.prune_plan(settings, name or [])
    deleted = carry_out(plan, backups.prune, dry_run=dry_run, yes=yes)
    for done in deleted or []:
        console.success(f"deleted {done} from {plan.work.delete.where}:/backups")


@ops_task(
    help={
        "check": "Re-hash every file (local and in the daemon pod) instead of trusting sizes",
        "local_only": "Do not ask the daemon pod",
        **_WHERE,
    }
)
def list_(
    c: Any,
    check: bool = False,
    local_only: bool = False,
    context: str | None = None,
    namespace: str | None = None,
    pod: str | None = None,
    database: str | None = None,
    backups_dir: str | None = None,
) -> None:
    """List local and daemon backups: name, where, age, size, format, verified."""
    settings = _settings(context, namespace, pod, database, backups_dir)
    listing = backups.list_all(settings, check=check, daemon=not local_only)
    rows = list(_rows(listing.backups, datetime.now(UTC)))
    console.table("Backups", ["name", "where", "age", "size", "format", "verified"], rows)
    if listing.daemon_error is not None:  # a partial answer is a failure: say what is missing
        error = listing.daemon_error
        error.message = listing.daemon_problem
        raise error


def _rows(listed: Sequence[ListedBackup], now: datetime) -> Iterator[list[str]]:
    for b in sorted(listed, key=lambda b: b.modified, reverse=True):
        size = console.human_size(b.size)
        yield [b.name, b.where, _age(now - b.modified), size, b.format, b.verified]


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit} ago"
    return f"{seconds}s ago"


@ops_task(
    help={
        "file": "Local backup to restore",
        "from_daemon": "Name of a backup in the daemon's /backups to restore instead",
        "yes": "Do not ask; restore right away",
        "no_safety_backup": "Skip the backup of the current database taken first",
        "no_sidecar": "Restore a file without its .json sidecar: no checksum, so whether it "
        "was altered cannot be known (the plan says so)",
        "from_database": "The database the backup was taken from, to restore it into another "
        "one (required then: --yes alone never crosses databases)",
        "dry_run": "Check the file and show the plan; touch nothing",
        **_WHERE,
    }
)
def restore(
    c: Any,
    file: str | None = None,
    from_daemon: str | None = None,
    yes: bool = False,
    no_safety_backup: bool = False,
    no_sidecar: bool = False,
    from_database: str | None = None,
    dry_run: bool = False,
    context: str | None = None,
    namespace: str | None = None,
    pod: str | None = None,
    database: str | None = None,
    backups_dir: str | None = None,
) -> None:
    """Restore a backup into the database in one transaction (asks first; safety backup)."""
    if bool(file) == bool(from_daemon):
        raise ConfigError(
            "name exactly one backup: --file FILE or --from-daemon NAME",
            hint="`inv backup.list` shows what there is.",
        )
    settings = _settings(context, namespace, pod, database, backups_dir)
    plan = backups.plan_restore(
        settings,
        file=Path(file) if file else None,
        from_daemon=from_daemon,
        require_sidecar=not no_sidecar,
        safety_backup=not no_safety_backup,
        from_database=from_database,
        progress=console.byte_progress,
    )
    report = carry_out(
        plan,
        lambda p: backups.run_restore(p.work, progress=console.byte_progress),
        dry_run=dry_run,
        yes=yes,
    )
    if report is None:
        return
    if report.safety_backup:
        console.success(f"safety backup: {report.safety_backup}")
    console.success(
        f"restored {report.file.name} into {report.database!r}: "
        f"{len(report.tables)} tables, {report.rows} rows"
    )
    console.table(
        "Rows per table after the restore",
        ["table", "rows"],
        [[t, str(n)] for t, n in sorted(report.tables.items())],
    )


@ops_task(
    help={
        "identity_file": "Where to write the private key "
        "(default: backup_identity_file, else secrets/backup_identity.txt)",
        "secrets_dir": "Folder of the local secret files (default: secrets)",
        "dry_run": "Show what would be written; write nothing",
    }
)
def keygen(
    c: Any,
    identity_file: str | None = None,
    secrets_dir: str | None = None,
    dry_run: bool = False,
) -> None:
    """Make an age key pair for encrypted backups (never replaces a key; prints no secret)."""
    from ops import backupkeys

    settings = settings_for(secrets_dir=secrets_dir)
    plan = backupkeys.keygen_plan(settings, Path(identity_file) if identity_file else None)
    pair = carry_out(plan, backupkeys.keygen, dry_run=dry_run, announce=False)
    if pair is None:
        return
    work = plan.work
    console.success(
        f"private key: {work.identity_file} (never commit it or copy it to the cluster)"
    )
    console.success(f"public key:  {pair.recipient}")
    if work.recipients_file is not None:
        console.info(f"  added to {work.recipients_file}: backup.now now encrypts to it")
    for warning in plan.warnings:  # announce=False showed no plan: its warnings come here
        console.warn(warning)
    console.warn(
        "Keep a copy of the private key somewhere safe and offline (a password manager): "
        "without it no encrypted backup can be restored. Put the public key in the daemon's "
        "ConfigMap too (k8s/README.md)."
    )


@ops_task(
    help={
        "file": "The old script's plain dump (UTF-16 from PowerShell 5.1, or CRLF)",
        "name": "Name of the backup made from it (default: <file's name>-imported.sql)",
        "backups_dir": "Local backup folder (default: backups/)",
        "dry_run": "Read the file and say what the import would do; write nothing",
    },
    positional=["file"],
)
def import_(
    c: Any,
    file: str,
    name: str | None = None,
    backups_dir: str | None = None,
    dry_run: bool = False,
) -> None:
    """Make an old script's plain dump (UTF-16, CRLF) a checked backup with a sidecar."""
    from ops.backups.legacy import import_plan, import_planned

    settings = settings_for(backups_dir=backups_dir)
    plan = import_plan(
        Path(file), backups_dir=settings.backups_dir, name=name, progress=console.byte_progress
    )
    result = carry_out(
        plan,
        lambda p: import_planned(p, progress=console.byte_progress),
        dry_run=dry_run,
        announce=False,
    )
    if result is None:
        return
    console.success(
        f"{result.path} ({console.human_size(result.info.size)}, sha256 "
        f"{result.info.sha256[:12]}…) from {file}: {result.plan.describe()}"
    )
    console.info(f"  restore it with: inv backup.restore --file {result.path}")


ns = Collection("backup", now, verify, to_daemon, restore, keygen, prune)
ns.add_task(list_, name="list")
ns.add_task(import_, name="import")
