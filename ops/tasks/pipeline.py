"""`inv pipeline`: build → push → rollout restart, each step as its own task does it."""

from __future__ import annotations

from invoke.context import Context

from ops import console
from ops.kube import resolve_target
from ops.tasks.common import Collection, ops_task, settings_for
from ops.tasks.image import BUILD_SETTINGS, PUSH_SETTINGS, build_plan_items, run_build, run_push
from ops.tasks.rollout import ROLLOUT_SETTINGS, rollout_plan_items, run_restart


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
) -> None:
    """Build the image, push both tags, roll the Deployment out to the pushed digest, wait."""
    from ops.images import plan_build

    settings = settings_for(context=context, namespace=namespace, rollout_timeout=timeout)
    rollout = not (no_push or no_rollout)
    if verbose:
        names = BUILD_SETTINGS + PUSH_SETTINGS[2:] + (ROLLOUT_SETTINGS if rollout else [])
        console.explain(settings, names)
    plan = plan_build(settings, extra_tags=tag or ())
    # Check the kube context before building: a refused context should cost no build.
    target = resolve_target(settings) if rollout else None
    if dry_run:
        items = build_plan_items(plan)
        items.append(("push", "no (--no-push)" if no_push else f"to {settings.registry}"))
        if not no_push:
            items.append(("login", settings.registry_username or "(anonymous)"))
        if target is not None:
            items += rollout_plan_items(settings, target)
            items.append(("rollout image", f"{settings.image}@<digest of the push> (immutable)"))
        else:
            items.append(("rollout", "no (--no-push)" if no_push else "no (--no-rollout)"))
        console.plan("pipeline would:", items)
        return
    built = run_build(settings, plan, verbose=verbose)
    if no_push:
        return
    pushed = run_push(settings, built.refs)
    if target is not None:
        # The exact image just pushed, by digest: the new ReplicaSet's template is immutable,
        # so a later pod (or an undo) never pulls whatever `latest` has become.
        image = f"{pushed[0].ref.name}@{pushed[0].digest}"
        run_restart(settings, target, undo_on_failure=undo_on_failure, image=image)


ns = Collection("pipeline", pipeline)
