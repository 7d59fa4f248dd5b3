"""`inv pipeline`: build → push → rollout restart, each step as its own task does it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.context import Context

from ops import console
from ops.tasks.common import carry_out, ops_task, settings_for
from ops.tasks.render import (
    BUILD_SETTINGS,
    PUSH_SETTINGS,
    ROLLOUT_SETTINGS,
    run_build,
    run_deploy,
    run_push,
    run_restart,
)

if TYPE_CHECKING:
    from ops.pipeline import PipelineWork
    from ops.plan import Plan


@ops_task(
    help={
        "no_push": "Build only; do not push (and so do not roll out)",
        "no_rollout": "Build and push, but do not restart the Deployment",
        "tag": "An extra tag besides latest and v1-YYYYMMDD-HHMM (UTC); repeatable",
        "dry_run": "Print the plan (image refs, registry, context, namespace) and touch nothing",
        "context": "Kube context (a context outside the allow-list must be named here)",
        "namespace": "Namespace of the Deployment (default: development)",
        "timeout": "Seconds to wait for the rollout to complete (default: 300)",
        "undo_on_failure": "If the rollout fails or times out, roll back to the previous revision",
        "verbose": "Show every build output line and where each setting came from",
        "overlay": "Overlay deployed first when nothing is deployed yet (default: development)",
        "yes": "Do not ask before replacing Secret values (when it deploys first)",
    },
    iterable=["tag"],
)
def pipeline(
    c: Context,
    no_push: bool = False,
    no_rollout: bool = False,
    tag: list[str] | None = None,
    dry_run: bool = False,
    context: str | None = None,
    namespace: str | None = None,
    timeout: float | None = None,
    undo_on_failure: bool = False,
    verbose: bool = False,
    overlay: str | None = None,
    yes: bool = False,
) -> None:
    """Build the image, push both tags, roll the Deployment out to the pushed digest, wait."""
    from ops.pipeline import plan_pipeline

    settings = settings_for(
        context=context, namespace=namespace, rollout_timeout=timeout, overlay=overlay
    )
    if verbose:
        rollout = not (no_push or no_rollout)
        names = BUILD_SETTINGS + PUSH_SETTINGS[2:] + (ROLLOUT_SETTINGS if rollout else [])
        console.explain(settings, names)

    def act(plan: Plan[PipelineWork]) -> None:
        work = plan.work
        built = run_build(settings, work.build, verbose=verbose)
        if not work.push:
            return
        pushed = run_push(settings, built.refs)
        # The exact image just pushed, by digest: the new ReplicaSet's template is
        # immutable, so a later pod (or an undo) never pulls whatever `latest` has become.
        image = f"{pushed[0].ref.name}@{pushed[0].digest}"
        if work.deploy is not None:
            from ops.deploy import with_app_image

            console.step(f"nothing deployed in {work.deploy.work.target.namespace}: deploying")
            run_deploy(with_app_image(work.deploy, image))
        elif work.restart is not None:
            run_restart(work.restart, image=image)

    plan = plan_pipeline(
        settings,
        extra_tags=tag or (),
        push=not no_push,
        rollout=not no_rollout,
        check_cluster=not dry_run,
        undo_on_failure=undo_on_failure,
    )
    if plan.work.deploy is not None and not dry_run:
        console.info(f"nothing deployed in {plan.work.deploy.work.target.namespace} yet:")
    carry_out(plan, act, dry_run=dry_run, yes=yes, announce=plan.work.deploy is not None)
