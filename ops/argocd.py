"""ArgoCD's view of a namespace: the Applications that deploy into it, their sync and health.

Read through the Kubernetes API (the ``applications.argoproj.io`` custom resources), not
ArgoCD's own API server: a kube context is all the suite has. ``summarize`` is a pure
function over one Application object (tested on recorded objects); ``applications_for``
asks the cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ops import kube
from ops.errors import NotFound
from ops.kube import KubeTarget

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "applications"
IN_CLUSTER = "https://kubernetes.default.svc"  # ArgoCD's name for the cluster it runs in
BAD_HEALTH = frozenset({"Degraded", "Missing", "Unknown"})
BAD_PHASES = frozenset({"Failed", "Error"})


@dataclass(frozen=True, kw_only=True)
class AppStatus:
    """One Application as `inv doctor` shows it."""

    name: str
    namespace: str  # where the Application object lives (ArgoCD's namespace, e.g. argocd)
    sync: str  # Synced, OutOfSync, Unknown
    health: str  # Healthy, Progressing, Degraded, Suspended, Missing, Unknown
    revision: str  # the git commit last compared ("" before the first comparison)
    problems: tuple[str, ...]  # error conditions, a failed operation, resources not healthy

    @property
    def ok(self) -> bool:
        """False when ArgoCD reports an error, a failed sync, or bad health."""
        return not (
            self.health in BAD_HEALTH
            or self.sync == "Unknown"
            or any(not p.startswith("resource ") for p in self.problems)
        )

    def describe(self) -> str:
        at = f" at {self.revision[:7]}" if self.revision else ""
        line = f"Application {self.name}: {self.sync}, {self.health}{at}"
        return line + "".join(f"; {p}" for p in self.problems)


def deploys_to(app: Mapping[str, Any], namespace: str) -> bool:
    """Whether the Application deploys into ``namespace`` of ArgoCD's own cluster (pure)."""
    destination = (app.get("spec") or {}).get("destination") or {}
    here = destination.get("server") == IN_CLUSTER or destination.get("name") == "in-cluster"
    return here and destination.get("namespace") == namespace


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def summarize(app: Mapping[str, Any]) -> AppStatus:
    """Sync, health and what is wrong, from one Application object (pure)."""
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    health = status.get("health") or {}
    problems = [
        f"{c.get('type')}: {_one_line(c.get('message', ''))}"
        for c in status.get("conditions") or []
        if str(c.get("type", "")).endswith("Error")
    ]
    operation = status.get("operationState") or {}
    if operation.get("phase") in BAD_PHASES:
        problems.append(
            f"last sync {operation['phase']}: {_one_line(operation.get('message', ''))}"
        )
    for resource in status.get("resources") or []:
        state = (resource.get("health") or {}).get("status")
        if state in BAD_HEALTH:
            message = (resource.get("health") or {}).get("message", "")
            problems.append(
                f"resource {resource.get('kind')}/{resource.get('name')} {state}"
                + (f": {_one_line(message)}" if message else "")
            )
    return AppStatus(
        name=str((app.get("metadata") or {}).get("name", "?")),
        namespace=str((app.get("metadata") or {}).get("namespace", "")),
        sync=str(sync.get("status") or "Unknown"),
        health=str(health.get("status") or "Unknown"),
        revision=str(sync.get("revision") or ""),
        problems=tuple(problems),
    )


def select(apps: Iterable[Mapping[str, Any]], namespace: str) -> list[AppStatus]:
    """The Applications deploying into ``namespace``, summarized, by name (pure)."""
    found = [summarize(a) for a in apps if deploys_to(a, namespace)]
    return sorted(found, key=lambda s: s.name)


def applications_for(target: KubeTarget) -> list[AppStatus] | None:
    """The Applications that deploy into the target's namespace; None without ArgoCD (no
    ``applications.argoproj.io`` API on the cluster)."""
    from kubernetes.client import CustomObjectsApi

    try:
        with kube.client(target) as client:
            listing: Any = CustomObjectsApi(client).list_cluster_custom_object(
                GROUP, VERSION, PLURAL, _request_timeout=10
            )
    except NotFound:
        return None
    return select(listing.get("items") or [], target.namespace)
