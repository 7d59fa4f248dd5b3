"""`inv rollout.restart` and `inv rollout.status`: roll the app's Deployment and watch it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.context import Context

from ops import console
from ops.kube import KubeTarget, resolve_target
from ops.tasks.common import Collection, Settings, ops_task, settings_for

if TYPE_CHECKING:
    from ops.rollout import PodProblem, RolloutResult, RolloutStatus

ROLLOUT_SETTINGS = ["kubeconfig", "context", "allowed_contexts", "namespace", "deployment"]

TARGET_HELP = {
    "context": "Kube context (a context outside the allow-list must be named here)",
    "namespace": "Namespace of the Deployment (default: development)",
    "deployment": "The Deployment (default: manifest-app)",
    "verbose": "Show where each setting came from",
}


def rollout_plan_items(settings: Settings, target: KubeTarget) -> list[tuple[str, str]]:
    return [
        ("context", target.context),
        ("namespace", target.namespace),
        ("Deployment", settings.deployment),
        ("action", "restart (patch kubectl.kubernetes.io/restartedAt), then wait"),
        ("timeout", f"{settings.rollout_timeout:g} s"),
    ]


def show_progress(status: RolloutStatus) -> None:
    console.info(f"  {status.progress}  — {status.message}")


def show_problem(problem: PodProblem) -> None:
    console.warn(str(problem))


def show_log(error: Exception) -> None:
    """The failing container's last log lines, if the error carries them."""
    context = getattr(error, "context", {})
    log = context.get("log") if isinstance(context, dict) else None
    if isinstance(log, list) and log:
        console.info(f"last log lines of pod {context.get('pod')}:")
        for line in log:
            console.info(f"    {line}")


def show_undo(revision: str) -> None:
    console.warn(f"rolling back to revision {revision} (the previous ReplicaSet's pod template)")


def run_restart(
    settings: Settings, target: KubeTarget, *, undo_on_failure: bool, image: str | None = None
) -> RolloutResult:
    from ops.errors import RolloutFailed
    from ops.rollout import restart as restart_deployment

    action = f"rolling out {image} to" if image else "restarting"
    console.step(
        f"{action} Deployment {settings.deployment} in {target.namespace} "
        f"(context {target.context})"
    )
    try:
        result = restart_deployment(
            target,
            settings.deployment,
            timeout=settings.rollout_timeout,
            undo_on_failure=undo_on_failure,
            on_progress=show_progress,
            on_problem=show_problem,
            on_undo=show_undo,
            image=image,
        )
    except RolloutFailed as error:
        show_log(error)
        raise
    console.success(
        f"rolled out {settings.deployment} (revision {result.revision}) "
        f"in {result.seconds:.0f} s: {result.status.progress}"
    )
    return result


@ops_task(
    help={
        **TARGET_HELP,
        "timeout": "Seconds to wait for the rollout to complete (default: 300)",
        "undo_on_failure": "If the rollout fails or times out, roll back to the previous revision",
        "dry_run": "Print the plan and touch nothing",
    }
)
def restart(
    c: Context,
    dry_run: bool = False,
    context: str | None = None,
    namespace: str | None = None,
    deployment: str | None = None,
    timeout: float | None = None,
    undo_on_failure: bool = False,
    verbose: bool = False,
) -> None:
    """Restart the app's Deployment as kubectl does and wait until the rollout completes."""
    settings = settings_for(
        context=context, namespace=namespace, deployment=deployment, rollout_timeout=timeout
    )
    if verbose:
        console.explain(settings, [*ROLLOUT_SETTINGS, "rollout_timeout"])
    target = resolve_target(settings)
    if dry_run:
        console.plan("rollout.restart would:", rollout_plan_items(settings, target))
        return
    run_restart(settings, target, undo_on_failure=undo_on_failure)


@ops_task(
    help={
        **TARGET_HELP,
        "wait": "Wait until the rollout completes (like `kubectl rollout status`)",
        "timeout": "With --wait: seconds to wait (default: 300)",
    }
)
def status(
    c: Context,
    context: str | None = None,
    namespace: str | None = None,
    deployment: str | None = None,
    wait: bool = False,
    timeout: float | None = None,
    verbose: bool = False,
) -> None:
    """Show the Deployment's rollout status; exit non-zero if it is stalled or paused."""
    from ops.errors import RolloutFailed
    from ops.rollout import read_status
    from ops.rollout import wait as wait_for_rollout

    settings = settings_for(
        context=context, namespace=namespace, deployment=deployment, rollout_timeout=timeout
    )
    if verbose:
        console.explain(settings, ROLLOUT_SETTINGS)
    target = resolve_target(settings)
    if wait:
        result = wait_for_rollout(
            target,
            settings.deployment,
            timeout=settings.rollout_timeout,
            on_progress=show_progress,
            on_problem=show_problem,
        )
        console.success(f"{result.status.message} ({result.status.progress})")
        return
    current = read_status(target, settings.deployment)
    where = f"{settings.deployment} in {target.namespace} (context {target.context})"
    if current.done:
        console.success(f"{where}: {current.message} ({current.progress})")
    elif current.failed:
        raise RolloutFailed(f"{where}: {current.message} ({current.progress})")
    else:
        console.step(f"{where}: {current.phase}: {current.message} ({current.progress})")


ns = Collection("rollout", restart, status)
