"""Deploy an overlay: server-side apply of the rendered manifests, through the kubernetes client.

No ``kubectl`` and no ``kustomize`` on the user's machine: the overlays are rendered into
``k8s/rendered/<overlay>.yaml`` with the pinned kustomize and kept in the repository (a test
fails when one is stale). Deploying is then:

1. read the rendered objects and move every namespaced one into the target namespace
   (the overlays say ``namespace: development``; ``--namespace`` may name any other);
2. plan (converge → status): the namespace, the Secrets from ``secrets/`` (``ops.secrets``'s
   own plan, values masked) and, per object, a server-side **dry-run** apply compared with
   the live object: ``create``, ``change`` (naming the changed fields, never their values),
   ``unchanged``, or ``conflict`` (another field manager owns a field we set: reported, never
   forced); with ``--prune``, the objects we applied before that left the manifests
   (``delete``; never a PersistentVolumeClaim);
3. act: create the namespace, apply the Secrets and the objects with one field manager
   (``manifest-deploy``), delete what the plan prunes, then wait until every StatefulSet
   (PostgreSQL) and the app's Deployment are ready, with the rollout's failure reasons.

Volumes outlive their namespace, as the seed's disaster-recovery table says: after the wait,
the PersistentVolumes of our claims (PostgreSQL's data, the backup daemon's folder) get the
reclaim policy ``Retain`` (the StorageClasses of Docker Desktop and the lab say ``Delete``),
and a deploy into a namespace whose claims are gone finds those ``Released`` volumes and
re-binds them (it clears the old claim's uid, so the new claim of the same name binds).

Two fields stay as they are live, because others own them after the first deploy: the app
container's image once ``inv pipeline`` rolled out a digest of the same repository, and
``spec.replicas`` of a Deployment an HPA scales. Where ArgoCD tracks the objects (its
tracking annotation, or its field manager), deploy applies nothing: ArgoCD owns them.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ops import kube
from ops.config import Settings
from ops.errors import ClusterError, ConfigError, RolloutFailed, RolloutTimeout, SecretsError
from ops.kube import KubeTarget, api_errors, resolve_target
from ops.plan import Item, Plan, items

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from ops.rollout import PodProblem, RolloutStatus
    from ops.secrets import ApplyWork

FIELD_MANAGER = "manifest-deploy"
ARGOCD_TRACKING = "argocd.argoproj.io/tracking-id"
PART_OF = ("app.kubernetes.io/part-of", "manifest")
NEVER_PRUNED = frozenset({"PersistentVolumeClaim", "PersistentVolume", "Namespace"})
# Pod Security admission on the namespace deploy creates (k8s/argocd's Applications give the
# namespaces they create the same labels). `enforce` is `baseline`, not `restricted`, for one
# reason: PostgreSQL's `data-owner` and the backup daemon's `volume-owner` init containers run
# as root with CHOWN to hand hostPath volumes (Docker Desktop, the lab) to their non-root users,
# because hostPath ignores `fsGroup`. Where the storage honours `fsGroup`, drop those init
# containers and enforce `restricted`. `warn`/`audit: restricted` name every pod that would not
# pass it; the app's pods do.
POD_SECURITY_LABELS = {
    "pod-security.kubernetes.io/enforce": "baseline",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}
# Fields the API server sets on every write: not a change of what we asked for.
_NOISE = frozenset(
    {"resourceVersion", "generation", "managedFields", "creationTimestamp", "uid", "selfLink"}
)

Action = Literal["create", "change", "unchanged", "conflict", "delete"]
Manifest = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ObjectChange:
    """What deploying does to one object; ``fields`` are paths, never values."""

    kind: str
    name: str
    action: Action
    fields: tuple[str, ...] = ()
    detail: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, kw_only=True)
class DeployWork:
    """What ``deploy`` acts on. ``objects`` are already in the target namespace."""

    target: KubeTarget
    overlay: str
    create_namespace: bool
    objects: tuple[Manifest, ...] = field(repr=False)
    changes: tuple[ObjectChange, ...]
    prune: tuple[Manifest, ...] = field(repr=False)
    secrets: Plan[ApplyWork] | None
    argocd: str | None  # the ArgoCD Application tracking the objects: nothing is applied
    rebind: tuple[str, ...] = ()  # Released PersistentVolumes of our claims, to bind again
    claims: tuple[str, ...] = ()  # our PersistentVolumeClaims (kept on namespace deletion)
    deployment: str
    timeout: float

    @property
    def conflicts(self) -> tuple[ObjectChange, ...]:
        return tuple(c for c in self.changes if c.action == "conflict")


@dataclass(frozen=True, kw_only=True)
class DeployReport:
    """What a deploy did and how long it took."""

    changes: tuple[ObjectChange, ...]
    pruned: tuple[str, ...]
    ready: tuple[str, ...]
    retained: tuple[str, ...]  # volumes whose reclaim policy this deploy set to Retain
    seconds: float


# --- the rendered manifests (pure) ------------------------------------------------------


def rendered_path(settings: Settings) -> Path:
    return settings.manifests_dir / f"{settings.overlay}.yaml"


def load_rendered(path: Path) -> list[Manifest]:
    """The objects of one rendered overlay."""
    import yaml

    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ConfigError(
            f"no rendered overlay at {path}" + (f" (known: {', '.join(known)})" if known else ""),
            hint="Pick one with --overlay NAME, and run from the repository's root folder.",
            setting="overlay",
        )
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def in_namespace(objects: Sequence[Manifest], namespace: str) -> list[Manifest]:
    """The objects moved into ``namespace`` (namespaced ones only: they carry one)."""
    moved = []
    for obj in objects:
        copied = copy.deepcopy(obj)
        if "namespace" in copied.get("metadata", {}):
            copied["metadata"]["namespace"] = namespace
        moved.append(copied)
    return moved


def keep_live_fields(
    desired: Manifest, live: Manifest | None, *, image_repository: str, scaled: bool
) -> Manifest:
    """``desired`` with the fields others own after the first deploy taken from ``live``:
    a container image that is a digest of the same repository (the pipeline rolled it out),
    and ``spec.replicas`` when an HPA scales the object (pure)."""
    if live is None:
        return desired
    result = copy.deepcopy(desired)
    if scaled and "replicas" in live.get("spec", {}):
        result.setdefault("spec", {})["replicas"] = live["spec"]["replicas"]
    live_images = {
        c.get("name"): c.get("image", "")
        for c in _dig(live, "spec", "template", "spec", "containers") or []
    }
    for container in _dig(result, "spec", "template", "spec", "containers") or []:
        want = str(container.get("image", ""))
        have = str(live_images.get(container.get("name"), ""))
        if (
            "@sha256:" in have
            and _repository(have) == _repository(want)
            and _repository(want).endswith(image_repository)
        ):
            container["image"] = have
    return result


def diff_paths(live: Any, planned: Any, prefix: str = "") -> list[str]:
    """Paths where ``planned`` differs from ``live``: maps compared key by key, anything else
    whole; the API server's bookkeeping (resourceVersion, managedFields, status) ignored."""
    if isinstance(live, Mapping) and isinstance(planned, Mapping):
        paths = []
        for key in sorted(set(live) | set(planned)):
            if (prefix == ".metadata" and key in _NOISE) or (not prefix and key == "status"):
                continue
            paths += diff_paths(live.get(key), planned.get(key), f"{prefix}.{key}")
        return paths
    return [] if live == planned else [prefix or "."]


def classify(
    desired: Manifest, live: Manifest | None, planned: Manifest | None, conflict: str = ""
) -> ObjectChange:
    """One object's line in the plan, from the live object and the server's dry-run apply
    (pure: tested on recorded objects)."""
    kind, name = desired["kind"], desired["metadata"]["name"]
    if conflict:
        return ObjectChange(kind=kind, name=name, action="conflict", detail=conflict)
    if live is None:
        return ObjectChange(kind=kind, name=name, action="create")
    paths = diff_paths(live, planned if planned is not None else desired)
    if not paths:
        return ObjectChange(kind=kind, name=name, action="unchanged")
    if kind == "Secret":  # a Secret's keys may be named; its values never
        paths = [p for p in paths if not p.startswith((".data.", ".stringData."))] + sorted(
            {".data" for p in paths if p.startswith((".data.", ".stringData."))}
        )
    return ObjectChange(kind=kind, name=name, action="change", fields=tuple(paths))


def claim_names(objects: Sequence[Manifest]) -> list[str]:
    """Our PersistentVolumeClaims: those in the manifests and those the StatefulSets make
    (``<template>-<statefulset>-<ordinal>``) (pure)."""
    names = [o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"]
    for sts in (o for o in objects if o["kind"] == "StatefulSet"):
        replicas = int(_dig(sts, "spec", "replicas") or 1)
        for template in _dig(sts, "spec", "volumeClaimTemplates") or []:
            prefix = f"{template['metadata']['name']}-{sts['metadata']['name']}"
            names += [f"{prefix}-{ordinal}" for ordinal in range(replicas)]
    return names


def released_volumes(
    volumes: Sequence[Manifest], namespace: str, claims: Sequence[str]
) -> list[str]:
    """Volumes left ``Released`` by a deleted claim of ours in ``namespace`` (pure)."""
    found = []
    for pv in volumes:
        ref = _dig(pv, "spec", "claimRef") or {}
        if (
            _dig(pv, "status", "phase") == "Released"
            and ref.get("namespace") == namespace
            and ref.get("name") in claims
        ):
            found.append(str(_dig(pv, "metadata", "name")))
    return sorted(found)


def argocd_application(objects: Sequence[Manifest]) -> str | None:
    """The ArgoCD Application tracking any of the live objects, if one does (pure)."""
    for obj in objects:
        metadata = obj.get("metadata") or {}
        tracking = (metadata.get("annotations") or {}).get(ARGOCD_TRACKING)
        if tracking:
            return str(tracking).split(":", 1)[0]
        for entry in metadata.get("managedFields") or []:
            if str(entry.get("manager", "")).startswith("argocd"):
                return "(unnamed: its controller manages the fields)"
    return None


def conflict_message(body: str) -> str:
    """The fields and managers of a server-side apply conflict (HTTP 409), in one line."""
    try:
        details = json.loads(body).get("details") or {}
    except ValueError:
        return "conflicting field managers"
    causes = details.get("causes") or []
    parts = [f"{c.get('field', '?')} ({c.get('message', '')})" for c in causes[:4]]
    return "; ".join(parts) or "conflicting field managers"


def stale_objects(live: Sequence[Manifest], desired: Sequence[Manifest]) -> list[Manifest]:
    """Live objects we applied before (our field manager, part of manifest) that left the
    manifests; never a PVC (pure)."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    stale = []
    for obj in live:
        metadata = obj.get("metadata") or {}
        key = (obj.get("kind"), metadata.get("name"))
        if obj.get("kind") in NEVER_PRUNED or key in wanted:
            continue
        if (metadata.get("labels") or {}).get(PART_OF[0]) != PART_OF[1]:
            continue
        if any(e.get("manager") == FIELD_MANAGER for e in metadata.get("managedFields") or []):
            stale.append(obj)
    return stale


# --- the plan ---------------------------------------------------------------------------


def plan_deploy(
    settings: Settings,
    *,
    prune: bool = False,
    with_secrets: bool = True,
    image: str | None = None,
) -> Plan[DeployWork]:
    """Read the rendered overlay, secrets/ and the cluster; what deploying would do.

    ``image``: run it in the app's container instead of the overlay's image."""
    from kubernetes.client import CoreV1Api
    from kubernetes.dynamic import DynamicClient

    from ops.errors import NotFound

    objects = load_rendered(rendered_path(settings))
    target = resolve_target(settings)
    namespace = target.namespace
    desired = in_namespace(objects, namespace)
    with kube.client(target) as client:
        try:
            with api_errors("namespace", name=namespace):
                CoreV1Api(client).read_namespace(namespace)
            exists = True
        except NotFound:
            exists = False
        dynamic = DynamicClient(client) if desired else None
        live = [_read(dynamic, obj, namespace) for obj in desired] if exists and dynamic else []
        live_by_key = {(o["kind"], o["metadata"]["name"]): o for o in live if o is not None}
        owner = argocd_application(list(live_by_key.values()))
        secrets = _secrets_plan(settings, target, exists) if with_secrets and not owner else None
        changes: list[ObjectChange] = []
        applied: list[Manifest] = []
        scaled = _hpa_targets(desired)
        for obj in desired:
            key = (obj["kind"], obj["metadata"]["name"])
            have = live_by_key.get(key)
            want = keep_live_fields(
                obj, have, image_repository=settings.image_repository, scaled=key in scaled
            )
            if image and key == ("Deployment", settings.deployment):
                want = set_app_image(want, image)
            applied.append(want)
            if owner:
                continue
            if have is None:
                changes.append(classify(want, None, None))
                continue
            assert dynamic is not None
            planned, conflict = _apply(dynamic, want, namespace, dry_run=True)
            changes.append(classify(want, have, planned, conflict))
        claims = claim_names(desired)
        rebind: list[str] = []
        if not owner and claims:
            with api_errors("PersistentVolumes"):
                volumes = client.sanitize_for_serialization(
                    CoreV1Api(client).list_persistent_volume().items
                )
            rebind = released_volumes(volumes, namespace, claims)
        stale: list[Manifest] = []
        if prune and exists and not owner and dynamic is not None:
            stale = stale_objects(_list_ours(dynamic, desired, namespace), desired)
    changes += [
        ObjectChange(kind=o["kind"], name=o["metadata"]["name"], action="delete") for o in stale
    ]
    work = DeployWork(
        target=target,
        overlay=settings.overlay,
        create_namespace=not exists,
        objects=tuple(applied),
        changes=tuple(changes),
        prune=tuple(stale),
        secrets=secrets,
        argocd=owner,
        rebind=tuple(rebind),
        claims=tuple(claims),
        deployment=settings.deployment,
        timeout=settings.rollout_timeout,
    )
    return _plan_of(work, settings, prune=prune)


def _plan_of(work: DeployWork, settings: Settings, *, prune: bool) -> Plan[DeployWork]:
    target = work.target
    lines = list(
        items(
            ("context", target.context),
            ("namespace", target.namespace + (" (create)" if work.create_namespace else "")),
            ("overlay", f"{work.overlay} ({rendered_path(settings)})"),
        )
    )
    warnings: list[str] = []
    if work.argocd:
        lines += items(("ArgoCD", f"Application {work.argocd} manages these objects"))
        warnings.append(
            f"ArgoCD (Application {work.argocd}) manages namespace {target.namespace!r}: "
            "deploy applies nothing there. Change k8s/ in git and let ArgoCD sync it."
        )
        return Plan(title="deploy", items=tuple(lines), warnings=tuple(warnings), work=work)
    if work.secrets is not None:
        lines += [
            Item(key=f"Secret/{i.key}" if i.key else "", value=i.value)
            for i in work.secrets.items
            if i.key != "target"
        ]
        warnings += work.secrets.warnings
    for volume in work.rebind:
        lines.append(Item(key=f"PersistentVolume/{volume}", value="re-bind (Released: retained)"))
    for change in work.changes:
        detail: str = change.action
        if change.fields:
            shown = ", ".join(change.fields[:6]) + (" …" if len(change.fields) > 6 else "")
            detail += f": {shown}"
        if change.detail:
            detail += f": {change.detail}"
        lines.append(Item(key=change.label, value=detail))
    counts = {a: sum(c.action == a for c in work.changes) for a in ("create", "change")}
    summary = f"{counts['create']} to create, {counts['change']} to change, " + (
        f"{sum(c.action == 'unchanged' for c in work.changes)} unchanged"
    )
    if prune:
        summary += f", {len(work.prune)} to delete (--prune; never a PersistentVolumeClaim)"
    lines.append(Item(key="summary", value=summary))
    if work.conflicts:
        warnings.append(
            f"{len(work.conflicts)} object(s) have fields another field manager owns; "
            "deploy does not force them (see `conflict` above)."
        )
    ask = None
    if work.prune:
        from ops.plan import Ask

        ask = Ask(
            prompt=f"This deletes {len(work.prune)} object(s) from {target.namespace!r}. "
            "Type the namespace to go on:",
            expected=target.namespace,
        )
    return Plan(title="deploy", items=tuple(lines), warnings=tuple(warnings), ask=ask, work=work)


def _secrets_plan(settings: Settings, target: KubeTarget, exists: bool) -> Plan[ApplyWork] | None:
    """The Secrets from secrets/; without the files, the cluster's own are left alone if both
    are there already, and otherwise ``secrets.init`` is the next step."""
    from ops.secrets import DB_SECRET, PULL_SECRET, desired_secrets, plan_from
    from ops.secrets import read_cluster_secrets as read

    current = read(target, [DB_SECRET, PULL_SECRET]) if exists else {}
    try:
        desired = desired_secrets(settings)
    except SecretsError as error:
        if exists and all(current.get(n) is not None for n in (DB_SECRET, PULL_SECRET)):
            return None
        raise SecretsError(
            f"{error.message}: the first deploy needs the Secrets from {settings.secrets_dir}/",
            hint="Run `inv secrets.init`, fill in the files it names, then deploy again.",
        ) from error
    return plan_from(target, desired, {d.name: current.get(d.name) for d in desired})


def set_app_image(deployment: Manifest, image: str) -> Manifest:
    """A copy of ``deployment`` whose app container (the one running ``image``'s repository,
    or its only one) runs ``image`` (pure)."""
    from ops.rollout import app_container, image_name

    changed = copy.deepcopy(deployment)
    container = app_container(changed, image_name(image))
    for spec in _dig(changed, "spec", "template", "spec", "containers") or []:
        if spec.get("name") == container:
            spec["image"] = image
    return changed


def with_app_image(plan: Plan[DeployWork], image: str) -> Plan[DeployWork]:
    """The same plan with the app's Deployment running ``image`` (the pipeline's pushed
    digest, on a first deploy: every object is created, so nothing else changes)."""
    work = plan.work
    app = ("Deployment", work.deployment)
    objects = tuple(
        set_app_image(o, image) if (o["kind"], o["metadata"]["name"]) == app else o
        for o in work.objects
    )
    return replace(plan, work=replace(work, objects=objects))


# --- acting -----------------------------------------------------------------------------


def deploy(
    plan: Plan[DeployWork],
    *,
    on_step: Callable[[str], None] | None = None,
    on_progress: Callable[[RolloutStatus], None] | None = None,
    on_problem: Callable[[PodProblem], None] | None = None,
    wait: bool = True,
    poll_seconds: float = 1.0,
) -> DeployReport:
    """Carry out a ``plan_deploy`` plan, then wait for PostgreSQL and the app."""
    from kubernetes.client import CoreV1Api, V1Namespace, V1ObjectMeta
    from kubernetes.dynamic import DynamicClient

    from ops.secrets import apply as apply_secrets

    work = plan.work
    started = time.monotonic()
    step = on_step or (lambda _: None)
    if work.argocd:
        return DeployReport(changes=(), pruned=(), ready=(), retained=(), seconds=0.0)
    if work.conflicts:
        names = ", ".join(c.label for c in work.conflicts)
        raise ClusterError(
            f"server-side apply conflicts on {names} in namespace {work.target.namespace!r}",
            hint="Another field manager owns those fields (see the plan). Change them back "
            "where they were changed, or remove that manager's ownership; deploy never forces.",
            namespace=work.target.namespace,
        )
    namespace = work.target.namespace
    with kube.client(work.target) as client:
        if work.create_namespace:
            step(f"creating namespace {namespace}")
            with api_errors("namespace", name=namespace):
                CoreV1Api(client).create_namespace(
                    V1Namespace(
                        metadata=V1ObjectMeta(name=namespace, labels=dict(POD_SECURITY_LABELS))
                    )
                )
            _wait_for_default_service_account(client, namespace)
        if work.secrets is not None:
            apply_secrets(work.secrets)
        for volume in work.rebind:
            step(f"re-binding the retained PersistentVolume {volume}")
            with api_errors("PersistentVolume", name=volume):
                CoreV1Api(client).patch_persistent_volume(
                    volume, {"spec": {"claimRef": {"uid": None, "resourceVersion": None}}}
                )
        dynamic = DynamicClient(client)
        by_key = {(c.kind, c.name): c for c in work.changes}
        for obj in work.objects:
            change = by_key.get((obj["kind"], obj["metadata"]["name"]))
            if change is not None and change.action == "unchanged":
                continue
            step(f"applying {obj['kind']}/{obj['metadata']['name']}")
            _, conflict = _apply(dynamic, obj, namespace, dry_run=False)
            if conflict:
                raise ClusterError(
                    f"server-side apply conflict on {obj['kind']}/{obj['metadata']['name']}: "
                    f"{conflict}",
                    hint="Another field manager changed it since the plan; run deploy again.",
                )
        pruned = []
        for obj in work.prune:
            label = f"{obj['kind']}/{obj['metadata']['name']}"
            step(f"deleting {label} (--prune)")
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            with api_errors(obj["kind"], name=obj["metadata"]["name"], namespace=namespace):
                resource.delete(name=obj["metadata"]["name"], namespace=namespace)
            pruned.append(label)
        ready: list[str] = []
        if wait:
            ready = _wait_ready(
                client,
                work,
                on_step=step,
                on_progress=on_progress,
                on_problem=on_problem,
                poll_seconds=poll_seconds,
            )
        retained = _retain_volumes(client, namespace, work.claims) if wait else []
    return DeployReport(
        changes=work.changes,
        pruned=tuple(pruned),
        ready=tuple(ready),
        retained=tuple(retained),
        seconds=time.monotonic() - started,
    )


def _retain_volumes(client: ApiClient, namespace: str, claims: Sequence[str]) -> list[str]:
    """Set reclaim policy Retain on the volumes bound to our claims; returns those changed."""
    from kubernetes.client import CoreV1Api

    from ops.errors import NotFound

    api = CoreV1Api(client)
    changed = []
    for claim in claims:
        try:
            with api_errors("PersistentVolumeClaim", name=claim, namespace=namespace):
                pvc = api.read_namespaced_persistent_volume_claim(claim, namespace)
        except NotFound:
            continue
        volume = pvc.spec.volume_name if pvc.spec else None
        if not volume:
            continue
        with api_errors("PersistentVolume", name=volume):
            pv = api.read_persistent_volume(volume)
            if pv.spec is not None and pv.spec.persistent_volume_reclaim_policy != "Retain":
                api.patch_persistent_volume(
                    volume, {"spec": {"persistentVolumeReclaimPolicy": "Retain"}}
                )
                changed.append(volume)
    return changed


# --- waiting ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StatefulSetStatus:
    """Where a StatefulSet stands (its pods ready on the current revision, or not)."""

    name: str
    done: bool
    message: str


def statefulset_status(sts: Mapping[str, Any]) -> StatefulSetStatus:
    """Ready when every replica is ready and on the update revision (pure)."""
    name = str(_dig(sts, "metadata", "name"))
    spec = sts.get("spec") or {}
    status = sts.get("status") or {}
    desired = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    observed = int(status.get("observedGeneration") or 0)
    generation = int(_dig(sts, "metadata", "generation") or 0)
    if observed < generation:
        return StatefulSetStatus(name=name, done=False, message="waiting for the controller")
    current, update = status.get("currentRevision"), status.get("updateRevision")
    if updated < desired or (update and current != update and desired > 0 and ready < desired):
        return StatefulSetStatus(
            name=name, done=False, message=f"{updated} of {desired} pods updated"
        )
    if ready < desired:
        return StatefulSetStatus(name=name, done=False, message=f"{ready} of {desired} pods ready")
    return StatefulSetStatus(name=name, done=True, message=f"{ready} of {desired} pods ready")


def _wait_ready(
    client: ApiClient,
    work: DeployWork,
    *,
    on_step: Callable[[str], None],
    on_progress: Callable[[RolloutStatus], None] | None,
    on_problem: Callable[[PodProblem], None] | None,
    poll_seconds: float,
) -> list[str]:
    from ops.rollout import wait as wait_for_rollout

    namespace = work.target.namespace
    deadline = time.monotonic() + work.timeout
    ready = []
    for obj in work.objects:
        if obj["kind"] == "StatefulSet":
            name = obj["metadata"]["name"]
            on_step(f"waiting for StatefulSet {name}")
            _wait_statefulset(
                client,
                namespace,
                obj,
                deadline=deadline,
                timeout=work.timeout,
                on_problem=on_problem,
                poll_seconds=poll_seconds,
            )
            ready.append(f"StatefulSet/{name}")
    if any(
        o["kind"] == "Deployment" and o["metadata"]["name"] == work.deployment for o in work.objects
    ):
        on_step(f"waiting for Deployment {work.deployment}")
        wait_for_rollout(
            work.target,
            work.deployment,
            timeout=max(deadline - time.monotonic(), 1.0),
            on_progress=on_progress,
            on_problem=on_problem,
            poll_seconds=poll_seconds,
        )
        ready.append(f"Deployment/{work.deployment}")
    return ready


def _wait_statefulset(
    client: ApiClient,
    namespace: str,
    obj: Manifest,
    *,
    deadline: float,
    timeout: float,
    on_problem: Callable[[PodProblem], None] | None,
    poll_seconds: float,
) -> None:
    from kubernetes.client import AppsV1Api, CoreV1Api

    from ops.rollout import ProblemJudge, pod_log_tail, pod_problems

    name = obj["metadata"]["name"]
    selector = ",".join(
        f"{k}={v}" for k, v in (_dig(obj, "spec", "selector", "matchLabels") or {}).items()
    )
    seen: set[tuple[str, str, str]] = set()
    judge = ProblemJudge()
    while True:
        with api_errors("StatefulSet", name=name, namespace=namespace):
            sts = client.sanitize_for_serialization(
                AppsV1Api(client).read_namespaced_stateful_set(name, namespace)
            )
        status = statefulset_status(sts)
        if status.done:
            return
        with api_errors("pods", namespace=namespace):
            pods = CoreV1Api(client).list_namespaced_pod(namespace, label_selector=selector)
        problems = pod_problems(pods.items)
        for problem in problems:
            if problem.key not in seen:
                seen.add(problem.key)
                if on_problem is not None:
                    on_problem(problem)
        fatal = judge.first_fatal(problems)
        if fatal is not None:
            raise RolloutFailed(
                f"StatefulSet {name!r} in namespace {namespace!r} is not ready: {fatal}",
                hint=fatal.hint,
                namespace=namespace,
                pod=fatal.pod,
                reason=fatal.reason,
                log=pod_log_tail(client, namespace, fatal),
            )
        if time.monotonic() >= deadline:
            why = "; ".join(f"{p.reason} in pod {p.pod}" for p in problems[:3])
            raise RolloutTimeout(
                f"StatefulSet {name!r} in namespace {namespace!r} not ready within "
                f"{timeout:g} s: {status.message}" + (f" ({why})" if why else "")
            )
        time.sleep(poll_seconds)


def _wait_for_default_service_account(client: ApiClient, namespace: str) -> None:
    """Pods of a new namespace need its ServiceAccount ``default``, made by a controller."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            CoreV1Api(client).read_namespaced_service_account("default", namespace)
            return
        except ApiException as exc:
            if exc.status != 404:
                with api_errors("ServiceAccount", name="default", namespace=namespace):
                    raise
        time.sleep(0.5)


# --- the API ----------------------------------------------------------------------------


def _apply(
    dynamic: Any, obj: Manifest, namespace: str, *, dry_run: bool
) -> tuple[Manifest | None, str]:
    """Server-side apply of one object; a conflict is returned (never forced), not raised."""
    from kubernetes.client.exceptions import ApiException

    kind, name = obj["kind"], obj["metadata"]["name"]
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=kind)
    try:
        result = resource.server_side_apply(
            body=obj,
            namespace=namespace if resource.namespaced else None,
            field_manager=FIELD_MANAGER,
            force_conflicts=False,
            dry_run="All" if dry_run else None,
        )
    except ApiException as exc:
        if exc.status == 409:
            return None, conflict_message(str(exc.body or ""))
        with api_errors(kind, name=name, namespace=namespace):
            raise
    return result.to_dict(), ""


def _read(dynamic: Any, obj: Manifest, namespace: str) -> Manifest | None:
    from kubernetes.client.exceptions import ApiException

    kind, name = obj["kind"], obj["metadata"]["name"]
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=kind)
    try:
        found = resource.get(name=name, namespace=namespace if resource.namespaced else None)
    except ApiException as exc:
        if exc.status == 404:
            return None
        with api_errors(kind, name=name, namespace=namespace):
            raise
    return dict(found.to_dict())


def _list_ours(dynamic: Any, desired: Sequence[Manifest], namespace: str) -> list[Manifest]:
    """Live objects labelled part-of manifest, of every kind the manifests have."""
    kinds = {(o["apiVersion"], o["kind"]) for o in desired if o["kind"] not in NEVER_PRUNED}
    found: list[Manifest] = []
    for api_version, kind in sorted(kinds):
        resource = dynamic.resources.get(api_version=api_version, kind=kind)
        with api_errors(kind, namespace=namespace):
            listed = resource.get(namespace=namespace, label_selector="=".join(PART_OF))
        for entry in listed.to_dict().get("items") or []:
            entry.setdefault("kind", kind)
            entry.setdefault("apiVersion", api_version)
            found.append(entry)
    return found


def _hpa_targets(objects: Sequence[Manifest]) -> set[tuple[str, str]]:
    return {
        (
            str(_dig(o, "spec", "scaleTargetRef", "kind")),
            str(_dig(o, "spec", "scaleTargetRef", "name")),
        )
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }


def _scale_target(hpa: Manifest, key: str) -> str:
    return str(_dig(hpa, "spec", "scaleTargetRef", key))


def _repository(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj
