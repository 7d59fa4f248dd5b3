"""Restart a Deployment the way kubectl does, wait for the rollout, and undo it on failure.

``evaluate`` is a pure function over a Deployment (a dict as the API returns it, or the
kubernetes client's object): the same decision ``kubectl rollout status`` makes, returned as
a frozen value, so it is tested on recorded status objects without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ops import kube
from ops.config import Settings
from ops.errors import RolloutFailed, RolloutTimeout
from ops.kube import KubeTarget, api_errors
from ops.plan import Plan, items

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

Phase = Literal["observing", "progressing", "complete", "stalled", "paused"]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"
# Annotations kubectl keeps from the Deployment (not copied from the ReplicaSet) on undo.
_UNDO_SKIP_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
FIELD_MANAGER = "manifest-ops"  # who changed the Deployment, in its managedFields
LOG_LINES = 20  # of a failing pod's container, shown with the failure
_PULL_HINT = (
    "The node cannot pull the image: check that the tag or digest exists in the registry "
    "(inv image.push) and that the pull secret harbor-regcred is right (inv secrets.apply)."
)
# Waiting reasons of a new pod that will not fix themselves: the rollout fails at once,
# each with what to do about it. (CrashLoopBackOff counts only after a restart.)
FAIL_FAST_HINTS: Mapping[str, str] = {
    "CrashLoopBackOff": "The new container starts and exits again: read its last log lines "
    "above, fix the image or its configuration (--undo-on-failure rolls back for you).",
    "ImagePullBackOff": _PULL_HINT,
    "ErrImagePull": _PULL_HINT,
    "ErrImageNeverPull": "imagePullPolicy is Never and the image is not on the node: "
    "set imagePullPolicy to IfNotPresent or Always.",
    "InvalidImageName": "The Deployment's image reference is malformed: check its image field.",
    "CreateContainerConfigError": "A Secret or ConfigMap (or a key in it) that the pod "
    "uses is missing: run `inv secrets.apply` and check the ConfigMap app-config.",
    "CreateContainerError": "The container runtime could not create the container: "
    "read the message above (often a volume mount or the command).",
    "RunContainerError": "The container runtime could not start the container: read the "
    "message above (often the command or the security context).",
}
BAD_WAITING_REASONS = frozenset(FAIL_FAST_HINTS)
# Reasons the kubelet retries by itself and that a healthy cluster shows for a moment: a pod
# is created before the node authorizer has linked it to its Secrets, so the kubelet cannot
# read them yet (it pulls without the pull secret: 401; or cannot build the environment), or
# a Secret is applied a second after the pod. Seen on the lab under load: the first pull of a
# new namespace's pod failed with 401, the kubelet's retry 3 s later succeeded. These fail
# the rollout only when still there after the kubelet's retry (its image back-off starts at
# 10 s); the two pull reasons are one problem (the kubelet alternates them).
RETRIED_BY_KUBELET: Mapping[str, str] = {
    "ErrImagePull": "pull",
    "ImagePullBackOff": "pull",
    "CreateContainerConfigError": "config",
}
RETRY_GRACE_SECONDS = 30.0


@dataclass(frozen=True, kw_only=True)
class RolloutStatus:
    """Where a Deployment's rollout stands, as ``kubectl rollout status`` would judge it."""

    name: str
    phase: Phase
    message: str
    desired: int
    updated: int
    ready: int
    available: int
    unavailable: int
    total: int
    generation: int
    observed_generation: int

    @property
    def done(self) -> bool:
        return self.phase == "complete"

    @property
    def failed(self) -> bool:
        return self.phase in ("stalled", "paused")

    @property
    def progress(self) -> str:
        return (
            f"{self.updated}/{self.desired} updated, {self.ready} ready, "
            f"{self.available} available, {self.total - self.updated} old"
        )


@dataclass(frozen=True, kw_only=True)
class PodProblem:
    """A container of a new pod that is stuck, and why."""

    pod: str
    container: str
    reason: str
    message: str
    restarts: int = 0

    @property
    def fatal(self) -> bool:
        """Of a kind that does not fix itself (a crash loop only after a restart); one the
        kubelet retries counts only when it outlasts the retry (``ProblemJudge``)."""
        if self.reason == "CrashLoopBackOff":
            return self.restarts >= 1
        return self.reason in FAIL_FAST_HINTS

    @property
    def retried_as(self) -> str | None:
        """What the kubelet retries when it shows this reason (``pull``), if it does."""
        return RETRIED_BY_KUBELET.get(self.reason)

    @property
    def hint(self) -> str:
        return FAIL_FAST_HINTS.get(self.reason, RolloutFailed.default_hint)

    @property
    def key(self) -> tuple[str, str, str]:
        """Same pod, container and reason: the same problem (back-off messages change)."""
        return (self.pod, self.container, self.reason)

    def __str__(self) -> str:
        tail = f": {self.message}" if self.message else ""
        return f"pod {self.pod} container {self.container}: {self.reason}{tail}"


@dataclass(frozen=True, kw_only=True)
class RolloutResult:
    """The end of a successful wait (or restart and wait)."""

    status: RolloutStatus
    restarted_at: str | None
    revision: str | None
    seconds: float


@dataclass(frozen=True, kw_only=True)
class RestartWork:
    """What ``restart`` acts on: a Deployment in a target, how long to wait for it, and
    whether a failed rollout is rolled back."""

    target: KubeTarget
    deployment: str
    timeout: float
    undo_on_failure: bool = False


def plan_restart(
    settings: Settings, target: KubeTarget, *, undo_on_failure: bool = False
) -> Plan[RestartWork]:
    """``rollout.restart``'s plan (reads nothing: a dry run needs no cluster)."""
    return Plan(
        title="rollout.restart",
        items=items(
            ("context", target.context),
            ("namespace", target.namespace),
            ("Deployment", settings.deployment),
            ("action", "restart (patch kubectl.kubernetes.io/restartedAt), then wait"),
            ("timeout", f"{settings.rollout_timeout:g} s"),
            (
                "on failure",
                "roll back to the previous revision"
                if undo_on_failure
                else "stop and report (--undo-on-failure rolls back)",
            ),
        ),
        work=RestartWork(
            target=target,
            deployment=settings.deployment,
            timeout=settings.rollout_timeout,
            undo_on_failure=undo_on_failure,
        ),
    )


def _field(obj: Any, *names: str) -> Any:
    """Read a field from an API dict (camelCase) or a client object / to_dict() (snake_case)."""
    if obj is None:
        return None
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return None


def _int(obj: Any, camel: str, snake: str) -> int:
    value = _field(obj, camel, snake)
    return int(value) if value is not None else 0


def evaluate(deployment: Any) -> RolloutStatus:
    """Judge a Deployment's rollout from its spec and status (pure; no API calls)."""
    metadata = _field(deployment, "metadata")
    spec = _field(deployment, "spec")
    status = _field(deployment, "status") or {}
    name = str(_field(metadata, "name") or "?")
    spec_replicas = _field(spec, "replicas")
    desired = int(spec_replicas) if spec_replicas is not None else 1
    generation = _int(metadata, "generation", "generation")
    observed = _int(status, "observedGeneration", "observed_generation")
    updated = _int(status, "updatedReplicas", "updated_replicas")
    total = _int(status, "replicas", "replicas")
    ready = _int(status, "readyReplicas", "ready_replicas")
    available = _int(status, "availableReplicas", "available_replicas")
    unavailable = _int(status, "unavailableReplicas", "unavailable_replicas")
    paused = bool(_field(spec, "paused"))

    def result(phase: Phase, message: str) -> RolloutStatus:
        return RolloutStatus(
            name=name,
            phase=phase,
            message=message,
            desired=desired,
            updated=updated,
            ready=ready,
            available=available,
            unavailable=unavailable,
            total=total,
            generation=generation,
            observed_generation=observed,
        )

    if generation > observed:
        if paused:
            return result("paused", f"Deployment {name!r} is paused")
        return result("observing", "waiting for the Deployment controller to see the change")
    for condition in _field(status, "conditions") or ():
        if (
            _field(condition, "type") == "Progressing"
            and _field(condition, "reason") == "ProgressDeadlineExceeded"
        ):
            return result("stalled", f"Deployment {name!r} exceeded its progress deadline")
    waiting: str | None = None
    if updated < desired:
        waiting = f"{updated} of {desired} new replicas updated"
    elif total > updated:
        waiting = f"{total - updated} old replicas pending termination"
    elif available < updated:
        waiting = f"{available} of {updated} updated replicas available"
    elif unavailable > 0:
        waiting = f"{unavailable} replicas unavailable"
    if waiting is None:
        return result("complete", f"Deployment {name!r} successfully rolled out")
    if paused:
        return result("paused", f"Deployment {name!r} is paused ({waiting})")
    return result("progressing", waiting)


def restarted_at(now: datetime | None = None) -> str:
    """The RFC 3339 time kubectl writes into the restartedAt annotation (UTC here)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def restart_patch(when: str) -> dict[str, Any]:
    """The strategic-merge patch `kubectl rollout restart` sends."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}}}


def read_status(target: KubeTarget, deployment: str) -> RolloutStatus:
    """The Deployment's rollout status right now."""
    with kube.client(target) as client:
        return evaluate(_read(client, target.namespace, deployment))


def image_patch(container: str, image: str, when: str) -> dict[str, Any]:
    """A strategic-merge patch setting one container's image (and restartedAt, so a rollout
    happens even when the image is the one already running)."""
    patch = restart_patch(when)
    patch["spec"]["template"]["spec"] = {"containers": [{"name": container, "image": image}]}
    return patch


def image_name(image: str) -> str:
    """An image reference without its tag or digest: ``host:5000/repo:tag@sha256:…`` →
    ``host:5000/repo`` (pure)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rindex(":")]
    return name


def app_container(deployment: Any, repository: str) -> str:
    """The name of the Deployment's container that runs an image of ``repository`` (pure)."""
    spec = _field(_field(_field(deployment, "spec"), "template"), "spec")
    containers = list(_field(spec, "containers") or ())
    names = [str(_field(c, "name")) for c in containers]
    matching = [
        str(_field(c, "name"))
        for c in containers
        if image_name(str(_field(c, "image") or "")) == repository
    ]
    if len(matching) == 1:
        return matching[0]
    if len(containers) == 1:
        return names[0]
    name = str(_field(_field(deployment, "metadata"), "name"))
    raise RolloutFailed(
        f"Deployment {name!r} has no single container running {repository} "
        f"(containers: {', '.join(names) or 'none'})",
        hint="Check --deployment, and the registry and image_repository settings.",
    )


def restart(
    target: KubeTarget,
    deployment: str,
    *,
    timeout: float,
    undo_on_failure: bool = False,
    on_progress: Callable[[RolloutStatus], None] | None = None,
    on_problem: Callable[[PodProblem], None] | None = None,
    on_undo: Callable[[str], None] | None = None,
    poll_seconds: float = 1.0,
    image: str | None = None,
) -> RolloutResult:
    """Restart the Deployment as kubectl does, then wait until the rollout completes.

    With ``image`` (an immutable reference, ``name@sha256:…``), the container running that
    image's repository is set to it in the same patch, so the new ReplicaSet's template
    names exactly that image and an undo returns to exactly the previous one.
    """
    from kubernetes.client import AppsV1Api

    with kube.client(target) as client:
        current = _read(client, target.namespace, deployment)
        if bool(_field(_field(current, "spec"), "paused")):
            raise RolloutFailed(
                f"Deployment {deployment!r} in namespace {target.namespace!r} is paused",
                hint=f"Resume it first: kubectl -n {target.namespace} rollout resume "
                f"deployment/{deployment}",
            )
        when = restarted_at()
        if image is None:
            patch = restart_patch(when)
        else:
            patch = image_patch(app_container(current, image_name(image)), image, when)
        with api_errors("Deployment", name=deployment, namespace=target.namespace):
            AppsV1Api(client).patch_namespaced_deployment(
                deployment,
                target.namespace,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type="application/strategic-merge-patch+json",
            )
        result = _wait(
            client,
            target.namespace,
            deployment,
            timeout=timeout,
            undo_on_failure=undo_on_failure,
            on_progress=on_progress,
            on_problem=on_problem,
            on_undo=on_undo,
            poll_seconds=poll_seconds,
        )
    return RolloutResult(
        status=result.status,
        restarted_at=when,
        revision=result.revision,
        seconds=result.seconds,
    )


def wait(
    target: KubeTarget,
    deployment: str,
    *,
    timeout: float,
    undo_on_failure: bool = False,
    on_progress: Callable[[RolloutStatus], None] | None = None,
    on_problem: Callable[[PodProblem], None] | None = None,
    on_undo: Callable[[str], None] | None = None,
    poll_seconds: float = 1.0,
) -> RolloutResult:
    """Wait until the Deployment's current rollout completes (like `kubectl rollout status`)."""
    with kube.client(target) as client:
        return _wait(
            client,
            target.namespace,
            deployment,
            timeout=timeout,
            undo_on_failure=undo_on_failure,
            on_progress=on_progress,
            on_problem=on_problem,
            on_undo=on_undo,
            poll_seconds=poll_seconds,
        )


def wait_until(
    fetch: Callable[[], RolloutStatus],
    *,
    timeout: float,
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[RolloutStatus], None] | None = None,
) -> RolloutStatus:
    """Poll ``fetch`` until the rollout is complete (returned), failed or past the timeout.

    Returns the last status; its phase tells the caller which (``complete`` or not). A status
    that is not complete when the time is up is returned as it is; the caller raises.
    """
    deadline = clock() + timeout
    last: RolloutStatus | None = None
    while True:
        status = fetch()
        if on_progress is not None and (last is None or _changed(last, status)):
            on_progress(status)
        last = status
        if status.done or status.failed or clock() >= deadline:
            return status
        sleep(min(poll_seconds, max(deadline - clock(), 0.0)))


def _changed(a: RolloutStatus, b: RolloutStatus) -> bool:
    return (a.phase, a.progress, a.message) != (b.phase, b.progress, b.message)


class _FailFast(Exception):  # a signal inside _wait, never seen outside
    def __init__(self, problem: PodProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _wait(
    client: ApiClient,
    namespace: str,
    deployment: str,
    *,
    timeout: float,
    undo_on_failure: bool,
    on_progress: Callable[[RolloutStatus], None] | None,
    on_problem: Callable[[PodProblem], None] | None,
    on_undo: Callable[[str], None] | None,
    poll_seconds: float,
) -> RolloutResult:
    started = time.monotonic()
    seen: list[PodProblem] = []  # a crash-looping pod is between reasons at times: remember
    judge = ProblemJudge()
    latest: dict[str, Any] = {}

    def fetch() -> RolloutStatus:
        latest["deployment"] = current = _read(client, namespace, deployment)
        status = evaluate(current)
        if not status.done:
            problems = new_pod_problems(client, namespace, current)
            for problem in problems:
                if problem.key not in {p.key for p in seen}:
                    seen.append(problem)
                    if on_problem is not None:
                        on_problem(problem)
            fatal = judge.first_fatal(problems)
            if fatal is not None:
                raise _FailFast(fatal)
        return status

    fatal: PodProblem | None = None
    try:
        status = wait_until(
            fetch, timeout=timeout, poll_seconds=poll_seconds, on_progress=on_progress
        )
    except _FailFast as stop:
        fatal = stop.problem
    seconds = time.monotonic() - started
    current = latest["deployment"]
    revision = _field(_field(current, "metadata"), "annotations") or {}
    if fatal is None and status.done:
        return RolloutResult(
            status=status, restarted_at=None, revision=revision.get(REVISION), seconds=seconds
        )

    # Gather the evidence before an undo scales the failing pods away.
    log = pod_log_tail(client, namespace, fatal) if fatal is not None else []
    reasons = failure_reasons(client, namespace, current, seen=seen)
    why = f" ({'; '.join(reasons)})" if reasons else ""
    undone = ""
    if undo_on_failure:
        back_to = _undo(client, namespace, deployment)
        if on_undo is not None:
            on_undo(back_to)
        after = wait_until(
            lambda: evaluate(_read(client, namespace, deployment)),
            timeout=timeout,
            poll_seconds=poll_seconds,
            on_progress=on_progress,
        )
        state = "complete" if after.done else f"not complete: {after.message}"
        undone = f"; rolled back to revision {back_to} ({state})"
    where = f"Deployment {deployment!r} in namespace {namespace!r}"
    if fatal is not None:
        restarts = f", {fatal.restarts} restarts" if fatal.restarts else ""
        raise RolloutFailed(
            f"rollout of {where} failed after {seconds:.0f} s: {fatal}{restarts}{why}{undone}",
            hint=fatal.hint,
            namespace=namespace,
            pod=fatal.pod,
            reason=fatal.reason,
            log=log,
        )
    if status.failed:
        raise RolloutFailed(f"rollout of {where} failed: {status.message}{why}{undone}")
    raise RolloutTimeout(
        f"rollout of {where} did not complete within {timeout:g} s: {status.message}{why}{undone}"
    )


class ProblemJudge:
    """Which of the problems seen while waiting fail the rollout now: one that will not fix
    itself at once, one the kubelet retries (a pull, a Secret it cannot read yet) only once
    it has lasted ``grace`` seconds in the same container."""

    def __init__(
        self,
        *,
        grace: float = RETRY_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._grace = grace
        self._clock = clock
        self._since: dict[tuple[str, str, str], float] = {}

    def first_fatal(self, problems: Sequence[PodProblem]) -> PodProblem | None:
        now = self._clock()
        for problem in problems:
            if not problem.fatal:
                continue
            if problem.retried_as is None:
                return problem
            key = (problem.pod, problem.container, problem.retried_as)
            if now - self._since.setdefault(key, now) >= self._grace:
                return problem
        return None


def pod_log_tail(client: ApiClient, namespace: str, problem: PodProblem) -> list[str]:
    """The last lines the failing container wrote (its previous run's, for a crash loop).

    Best effort: a container that never started has no log, and that is no new error.
    """
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException

    api = CoreV1Api(client)
    for previous in (True, False) if problem.restarts else (False,):
        try:
            text = api.read_namespaced_pod_log(
                problem.pod,
                namespace,
                container=problem.container,
                tail_lines=LOG_LINES,
                previous=previous,
                _request_timeout=10,
            )
        except (ApiException, OSError):
            continue
        lines = [_one_line(line, 300) for line in str(text or "").splitlines() if line.strip()]
        if lines:
            return lines[-LOG_LINES:]
    return []


def current_replica_set(deployment: Any, replica_sets: Sequence[Any]) -> Any | None:
    """The ReplicaSet of the Deployment's current revision, or None until the controller
    has made it (pure). Never an older one: its pods are not this rollout's."""
    metadata = _field(deployment, "metadata")
    status = _field(deployment, "status") or {}
    uid = _field(metadata, "uid")
    if _int(metadata, "generation", "generation") > _int(
        status, "observedGeneration", "observed_generation"
    ):
        return None  # the controller has not seen the change: the new ReplicaSet may not exist
    revision = _revision(deployment)
    for replica_set in replica_sets:
        rs_meta = _field(replica_set, "metadata")
        owners = _field(rs_meta, "ownerReferences", "owner_references") or ()
        if any(_field(ref, "uid") == uid for ref in owners) and _revision(replica_set) == revision:
            return replica_set
    return None


def own_events(events: Sequence[Any], replica_set: Any) -> list[Any]:
    """The events about this ReplicaSet and its pods only, oldest first (pure).

    Not the Deployment's (Normal scaling events), not the HPA's of the same name, not
    those of older ReplicaSets' pods.
    """
    name = str(_field(_field(replica_set, "metadata"), "name"))
    chosen = []
    for event in events:
        involved = _field(event, "involvedObject", "involved_object")
        kind = _field(involved, "kind")
        involved_name = str(_field(involved, "name") or "")
        if (kind == "ReplicaSet" and involved_name == name) or (
            kind == "Pod" and involved_name.startswith(name + "-")
        ):
            chosen.append(event)
    chosen.sort(key=_event_time)
    return chosen


def new_pod_problems(client: ApiClient, namespace: str, deployment: Any) -> list[PodProblem]:
    """Stuck containers of the pods of the Deployment's current ReplicaSet."""
    from kubernetes.client import CoreV1Api

    replica_set = current_replica_set(
        deployment, _owned_replica_sets(client, namespace, deployment)
    )
    if replica_set is None:
        return []
    template_hash = (replica_set.metadata.labels or {}).get(TEMPLATE_HASH)
    if not template_hash:
        return []
    with api_errors("pods", namespace=namespace):
        pods = CoreV1Api(client).list_namespaced_pod(
            namespace, label_selector=f"{TEMPLATE_HASH}={template_hash}"
        )
    return pod_problems(pods.items)


def pod_problems(pods: Sequence[Any]) -> list[PodProblem]:
    """Containers waiting for a reason other than a normal start (pure)."""
    problems = []
    for pod in pods:
        pod_name = str(_field(_field(pod, "metadata"), "name"))
        status = _field(pod, "status")
        statuses = [
            *(_field(status, "initContainerStatuses", "init_container_statuses") or ()),
            *(_field(status, "containerStatuses", "container_statuses") or ()),
        ]
        for container in statuses:
            state = _field(container, "state")
            waiting = _field(state, "waiting")
            terminated = _field(state, "terminated")
            reason = _field(waiting, "reason")
            message = str(_field(waiting, "message") or "")
            exit_code = _field(terminated, "exitCode", "exit_code")
            if not reason and exit_code:  # exited non-zero, not yet restarted
                reason = _field(terminated, "reason") or "Error"
                message = f"exit code {exit_code}"
            if reason and reason not in ("ContainerCreating", "PodInitializing"):
                problems.append(
                    PodProblem(
                        pod=pod_name,
                        container=str(_field(container, "name")),
                        reason=str(reason),
                        message=_one_line(message),
                        restarts=_int(container, "restartCount", "restart_count"),
                    )
                )
    return problems


def failure_reasons(
    client: ApiClient, namespace: str, deployment: Any, *, seen: Sequence[PodProblem] = ()
) -> list[str]:
    """Why a rollout is stuck: the new pods' waiting reasons (now, or ``seen`` while waiting)
    and the latest Warning events."""
    from kubernetes.client import CoreV1Api

    reasons: list[str] = []
    for problem in [*new_pod_problems(client, namespace, deployment), *seen]:
        text = f"{problem.reason} in pod {problem.pod}"
        if text not in reasons and len(reasons) < 3:
            reasons.append(text)
    # Warning events of this rollout's ReplicaSet and its pods only.
    replica_set = current_replica_set(
        deployment, _owned_replica_sets(client, namespace, deployment)
    )
    if replica_set is None:
        return reasons
    with api_errors("events", namespace=namespace):
        events = CoreV1Api(client).list_namespaced_event(namespace, field_selector="type=Warning")
    for event in own_events(events.items, replica_set)[-2:]:
        reasons.append(f"event {event.reason}: {_one_line(event.message or '')}")
    return reasons


def _event_time(event: Any) -> datetime:
    moment = (
        _field(event, "lastTimestamp", "last_timestamp")
        or _field(event, "eventTime", "event_time")
        or _field(event, "firstTimestamp", "first_timestamp")
    )
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment if isinstance(moment, datetime) else datetime.min.replace(tzinfo=UTC)


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _revision(obj: Any) -> int:
    annotations = _field(_field(obj, "metadata"), "annotations") or {}
    try:
        return int(annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def _owned_replica_sets(client: ApiClient, namespace: str, deployment: Any) -> list[Any]:
    from kubernetes.client import AppsV1Api

    uid = _field(_field(deployment, "metadata"), "uid")
    with api_errors("ReplicaSets", namespace=namespace):
        items = AppsV1Api(client).list_namespaced_replica_set(namespace).items
    return [
        rs
        for rs in items
        if rs.metadata and any(ref.uid == uid for ref in rs.metadata.owner_references or ())
    ]


def _undo(client: ApiClient, namespace: str, deployment: str) -> str:
    from kubernetes.client import AppsV1Api

    current = _read(client, namespace, deployment)
    current_revision = _revision(current)
    older = [
        rs
        for rs in _owned_replica_sets(client, namespace, current)
        if 0 < _revision(rs) < current_revision
    ]
    if not older:
        raise RolloutFailed(
            f"cannot roll back Deployment {deployment!r}: no previous revision",
            hint="Fix the image or the manifest and roll out again.",
        )
    previous = max(older, key=_revision)
    template = client.sanitize_for_serialization(previous.spec.template)
    template.get("metadata", {}).get("labels", {}).pop(TEMPLATE_HASH, None)
    annotations = {
        k: v for k, v in (current.metadata.annotations or {}).items() if k in _UNDO_SKIP_ANNOTATIONS
    }
    annotations.update(
        {
            k: v
            for k, v in (previous.metadata.annotations or {}).items()
            if k not in _UNDO_SKIP_ANNOTATIONS
        }
    )
    patch = [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]
    with api_errors("Deployment", name=deployment, namespace=namespace):
        AppsV1Api(client).patch_namespaced_deployment(
            deployment,
            namespace,
            patch,
            field_manager=FIELD_MANAGER,
            _content_type="application/json-patch+json",
        )
    return str(_revision(previous))


def _read(client: ApiClient, namespace: str, deployment: str) -> Any:
    from kubernetes.client import AppsV1Api, CoreV1Api
    from kubernetes.client.exceptions import ApiException

    try:
        return AppsV1Api(client).read_namespaced_deployment(deployment, namespace)
    except ApiException as exc:
        missing = exc.status == 404
        error = exc
    if missing:
        # Say which one is missing: the namespace, or the Deployment in it.
        try:
            CoreV1Api(client).read_namespace(namespace)
        except ApiException as ns_exc:
            if ns_exc.status == 404:
                with api_errors("namespace", name=namespace):
                    raise ns_exc from None
    with api_errors("Deployment", name=deployment, namespace=namespace):
        raise error
