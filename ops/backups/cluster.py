"""The tasks' work in the cluster: find the pods, then dump, verify, drill, ship and list."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ops.backups.commands import program_name
from ops.backups.daemon import (
    DAEMON_DIR,
    DeletePlan,
    delete_from_daemon,
    list_daemon,
    plan_delete,
    prune_daemon,
    send_to_daemon,
)
from ops.backups.dump import Source, take_backup
from ops.backups.files import (
    BackupInfo,
    ListedBackup,
    ProgressFactory,
    Verification,
    _no_progress,
    backup_name,
    list_local,
    sha256_of,
    sidecar_of,
    verify_backup,
)
from ops.backups.restore import drill
from ops.config import Settings
from ops.errors import BackupError, ClusterError, CorruptBackup, OpsError
from ops.execstream import CommandRunner, LocalRunner
from ops.pgformat import DumpFormat, read_file_header

if TYPE_CHECKING:
    from ops.kube import KubeTarget


def iter_rows(listed: Sequence[ListedBackup], now: datetime) -> Iterator[list[str]]:
    for b in sorted(listed, key=lambda b: b.modified, reverse=True):
        yield [b.name, b.where, _age(now - b.modified), _size(b.size), b.format, b.verified]


def _age(delta: object) -> str:
    seconds = int(delta.total_seconds()) if hasattr(delta, "total_seconds") else 0
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit} ago"
    return f"{seconds}s ago"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


# --- the cluster: where the tasks run ---------------------------------------------------


def human_size(n: int) -> str:
    return _size(n)


def _target(settings: Settings) -> KubeTarget:
    from ops.kube import resolve_target

    return resolve_target(settings)


def ensure_running(target: KubeTarget, pod: str) -> None:
    """NotFound if the pod does not exist, ClusterError if it is not running."""
    from kubernetes.client import CoreV1Api

    from ops.kube import api_client, api_errors

    with api_errors("pod", name=pod, namespace=target.namespace):
        found = CoreV1Api(api_client(target)).read_namespaced_pod(pod, target.namespace)
    phase = found.status.phase if found.status else None
    deleting = found.metadata is not None and found.metadata.deletion_timestamp is not None
    if phase != "Running" or deleting:
        state = "being deleted" if deleting else (phase or "unknown")
        raise ClusterError(
            f"pod {pod!r} in namespace {target.namespace!r} is {state}, not Running",
            hint="Wait until it runs (`kubectl get pod -w`), then try again.",
            pod=pod,
            namespace=target.namespace,
        )


def _restore_source(settings: Settings) -> Source:
    """The pod to restore into, with its exec protocol already learned."""
    from ops.execstream import PodExec

    source = pod_source(settings)
    if isinstance(source.runner, PodExec):
        source.runner.protocol()
    return source


def memory_limits(settings: Settings, pod: str) -> str:
    """The pod's containers' memory limits, e.g. ``postgres 1Gi`` (best effort: "" if unknown).

    For an error that says the server was killed: the limit is what to raise.
    """
    from kubernetes.client import CoreV1Api

    from ops.kube import api_client, api_errors

    target = _target(settings)
    try:
        with api_errors("pod", name=pod, namespace=target.namespace):
            client = api_client(target)
            try:
                spec = CoreV1Api(client).read_namespaced_pod(pod, target.namespace).spec
            finally:
                client.close()
    except OpsError:
        return ""
    limits = [
        f"{c.name} {(c.resources.limits or {}).get('memory', 'no limit')}"
        for c in (spec.containers if spec is not None else [])
        if c.resources is not None
    ]
    return ", ".join(limits)


def pod_source(settings: Settings) -> Source:
    """The postgres pod as a backup source, checked to be running."""
    from ops.execstream import PodExec

    target = _target(settings)
    ensure_running(target, settings.postgres_pod)
    return Source(
        runner=PodExec(target, settings.postgres_pod, describe=program_name),
        database=settings.database,
        context=target.context,
        namespace=target.namespace,
        pod=settings.postgres_pod,
    )


def daemon_runner(settings: Settings) -> CommandRunner:
    """A runner in a running pod of the backup daemon's Deployment."""
    from kubernetes.client import AppsV1Api, CoreV1Api

    from ops.execstream import PodExec
    from ops.kube import api_client, api_errors

    target = _target(settings)
    name = settings.backup_daemon
    with api_errors("Deployment", name=name, namespace=target.namespace):
        client = api_client(target)
        deployment = AppsV1Api(client).read_namespaced_deployment(name, target.namespace)
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = CoreV1Api(client).list_namespaced_pod(target.namespace, label_selector=selector)
    running = [
        (p.metadata.creation_timestamp, p.metadata.name)
        for p in pods.items
        if p.status
        and p.status.phase == "Running"
        and p.metadata is not None
        and p.metadata.deletion_timestamp is None
        and p.metadata.name
    ]
    if not running:
        raise ClusterError(
            f"no running pod of Deployment {name!r} in namespace {target.namespace!r}",
            hint="Check the daemon with `kubectl get pods`; it may still be starting.",
        )
    _, newest = max(running, key=lambda p: (str(p[0]), str(p[1])))
    return PodExec(target, str(newest), describe=program_name)


def backup_plan(settings: Settings) -> list[tuple[str, str]]:
    from ops.kube import resolve_target

    target = resolve_target(settings)
    fmt: DumpFormat = settings.backup_format
    name = backup_name(settings.database, target.context, fmt, datetime.now(UTC))
    return [
        ("context", target.context),
        ("namespace", target.namespace),
        ("pod", settings.postgres_pod),
        ("database", settings.database),
        (
            "format",
            fmt + (f", compression {settings.backup_compression}" if fmt == "custom" else ""),
        ),
        ("file", str(settings.backups_dir / name)),
        ("keep", f"newest {settings.backup_keep} local backups"),
    ]


def backup_now(
    settings: Settings, *, progress: ProgressFactory = _no_progress
) -> tuple[Path, BackupInfo]:
    return take_backup(
        pod_source(settings),
        backups_dir=settings.backups_dir,
        fmt=settings.backup_format,
        compression=settings.backup_compression,
        progress=progress,
    )


def full_reader_for(settings: Settings, reader: str) -> CommandRunner | None:
    import shutil

    if reader == "skip":
        return None
    if reader == "local" or (reader == "auto" and shutil.which("pg_restore")):
        if not shutil.which("pg_restore"):
            raise BackupError(
                "pg_restore is not installed here", hint="Use --reader pod to read it in the pod."
            )
        return LocalRunner(describe=program_name)
    if reader in ("pod", "auto"):
        return pod_source(settings).runner
    raise BackupError(f"--reader must be auto, local, pod or skip, not {reader!r}")


def verify_file(
    settings: Settings,
    path: Path,
    *,
    reader: str = "auto",
    require_sidecar: bool = True,
    progress: ProgressFactory = _no_progress,
) -> Verification:
    full_reader = None
    if path.is_file() and read_file_header(path).format == "custom":
        full_reader = full_reader_for(settings, reader)
    return verify_backup(
        path, full_reader=full_reader, progress=progress, require_sidecar=require_sidecar
    )


def drill_in_pod(
    settings: Settings, path: Path, *, progress: ProgressFactory = _no_progress
) -> tuple[dict[str, int], dict[str, int]]:
    return drill(path, pod_source(settings), progress=progress)


def to_daemon_plan(settings: Settings, path: Path, name: str) -> list[tuple[str, str]]:
    from ops.kube import resolve_target

    if not path.is_file():
        raise CorruptBackup(f"{path} does not exist")
    target = resolve_target(settings)
    return [
        ("context", target.context),
        ("namespace", target.namespace),
        ("daemon", f"Deployment {settings.backup_daemon}, {DAEMON_DIR}/{name}"),
        ("file", f"{path} ({human_size(path.stat().st_size)})"),
        ("then", "check sha256 in the pod; sh /scripts/backup.sh prune"),
    ]


def to_daemon(
    settings: Settings, path: Path, *, name: str, progress: ProgressFactory = _no_progress
) -> tuple[str, str, str]:
    """Verify locally, upload, check in the pod, prune there. (pod, sha256, prune output)"""
    checked = verify_backup(path, full_reader=None, progress=progress, require_sidecar=False)
    created = (
        datetime.fromisoformat(checked.info.created)
        if checked.info is not None
        else datetime.fromtimestamp(path.stat().st_mtime, UTC)
    )
    runner = daemon_runner(settings)
    digest = send_to_daemon(path, runner, name=name, created=created, progress=progress)
    return runner.where, digest, prune_daemon(runner)


def prune_plan(settings: Settings, names: Sequence[str]) -> tuple[DeletePlan, CommandRunner]:
    """What ``inv backup.prune`` would delete from the daemon's volume (checked to exist)."""
    runner = daemon_runner(settings)
    return plan_delete(runner, names), runner


def prune(plan: DeletePlan, runner: CommandRunner) -> list[str]:
    return delete_from_daemon(runner, plan)


def list_all(
    settings: Settings, *, check: bool = False, daemon: bool = True
) -> tuple[list[ListedBackup], str]:
    """Local and daemon backups; the second value says why the daemon was not listed."""
    listed = list_local(settings.backups_dir)
    if check:
        listed = [_rehash(settings.backups_dir, b) for b in listed]
    problem = ""
    if daemon:
        try:
            listed += list_daemon(daemon_runner(settings), check=check)
        except OpsError as exc:
            problem = f"daemon backups not listed: {exc.message}"
    return listed, problem


def _rehash(backups_dir: Path, listed: ListedBackup) -> ListedBackup:
    path = backups_dir / listed.name
    try:
        info = BackupInfo.read(sidecar_of(path))
    except (FileNotFoundError, CorruptBackup):
        return listed
    ok = info.size == listed.size and sha256_of(path) == info.sha256
    return ListedBackup(**{**asdict(listed), "verified": "sha256 ok" if ok else "SHA256 MISMATCH"})
