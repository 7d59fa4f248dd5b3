"""`inv rollout.restart` and `inv rollout.status`: roll the app's Deployment and watch it."""

from __future__ import annotations

from invoke.context import Context

from ops import console
from ops.kube import resolve_target
from ops.tasks.common import Collection, carry_out, ops_task, settings_for
from ops.tasks.render import (
    ROLLOUT_SETTINGS,
    run_restart,
    show_log,
    show_problem,
    show_progress,
)

TARGET_HELP = {
    "context": "Kube context (a context outside the allow-list must be named here)",
    "namespace": "Namespace of the Deployment (default: development)",
    "deployment": "The Deployment (default: manifest-app)",
    "verbose": "Show where each setting came from",
}


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
    from ops.rollout import plan_restart

    plan = plan_restart(settings, resolve_target(settings), undo_on_failure=undo_on_failure)
    carry_out(plan, run_restart, dry_run=dry_run, announce=False)


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
        try:
            result = wait_for_rollout(
                target,
                settings.deployment,
                timeout=settings.rollout_timeout,
                on_progress=show_progress,
                on_problem=show_problem,
            )
        except RolloutFailed as error:
            show_log(error)
            raise
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
