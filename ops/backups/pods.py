"""Finding the pods the backups run in: the postgres pod and the backup daemon's pod.

Each returns a ``Source`` or ``CommandRunner`` whose commands name themselves in messages
by the PostgreSQL tool they run (``program_name``).
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from ops.backups.commands import program_name
from ops.backups.dump import Source
from ops.config import Settings
from ops.errors import BackupError, ClusterError, OpsError
from ops.execstream import CommandRunner, LocalRunner

if TYPE_CHECKING:
    from ops.kube import KubeTarget


def ensure_running(target: KubeTarget, pod: str) -> None:
    """NotFound if the pod does not exist, ClusterError if it is not running."""
    from kubernetes.client import CoreV1Api

    from ops.kube import api_errors, client

    with api_errors("pod", name=pod, namespace=target.namespace), client(target) as api:
        found = CoreV1Api(api).read_namespaced_pod(pod, target.namespace)
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


def memory_limits(settings: Settings, pod: str) -> str:
    """The pod's containers' memory limits, e.g. ``postgres 1Gi`` (best effort: "" if unknown).

    For an error that says the server was killed: the limit is what to raise.
    """
    from kubernetes.client import CoreV1Api

    from ops.kube import api_errors, client, resolve_target

    target = resolve_target(settings)
    try:
        with api_errors("pod", name=pod, namespace=target.namespace), client(target) as api:
            spec = CoreV1Api(api).read_namespaced_pod(pod, target.namespace).spec
    except OpsError:
        return ""
    limits = [
        f"{c.name} {(c.resources.limits or {}).get('memory', 'no limit')}"
        for c in (spec.containers if spec is not None else [])
        if c.resources is not None
    ]
    return ", ".join(limits)


def pod_source(settings: Settings) -> Source:
    """The postgres pod as a backup source.

    Not looked up first: the first exec finds it (a 404 is "pod not found"), and only when
    the API server refuses an exec into it is the pod read, to say why (not Running).
    """
    from ops.execstream import PodExec
    from ops.kube import resolve_target

    target = resolve_target(settings)
    pod = settings.postgres_pod
    return Source(
        runner=PodExec(
            target, pod, describe=program_name, on_refused=lambda: ensure_running(target, pod)
        ),
        database=settings.database,
        context=target.context,
        namespace=target.namespace,
        pod=settings.postgres_pod,
    )


def daemon_runner(settings: Settings) -> CommandRunner:
    """A runner in the newest running pod of the backup daemon's Deployment."""
    from kubernetes.client import AppsV1Api, CoreV1Api

    from ops.execstream import PodExec
    from ops.kube import api_errors, client, resolve_target

    target = resolve_target(settings)
    name = settings.backup_daemon
    with (
        api_errors("Deployment", name=name, namespace=target.namespace),
        client(target) as api,
    ):
        deployment = AppsV1Api(api).read_namespaced_deployment(name, target.namespace)
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = CoreV1Api(api).list_namespaced_pod(target.namespace, label_selector=selector)
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


def full_reader_for(settings: Settings, reader: str) -> CommandRunner | None:
    """Where pg_restore reads a custom dump in full: ``auto``, ``local``, ``pod`` or
    ``skip`` (None)."""
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
