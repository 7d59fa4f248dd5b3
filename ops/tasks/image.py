"""`inv image.build` and `inv image.push`: the app's image, built and shipped to the registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.context import Context

from ops import console
from ops.tasks.common import Collection, carry_out, ops_task, settings_for
from ops.tasks.render import BUILD_SETTINGS, PUSH_SETTINGS, run_build, run_push

if TYPE_CHECKING:
    from ops.images import BuildPlan
    from ops.plan import Plan

HELP = {
    "tag": "An extra tag besides latest and v1-YYYYMMDD-HHMM (UTC); repeatable",
    "dry_run": "Print the plan and touch nothing",
    "verbose": "Show every build output line and where each setting came from",
    "build_context": "Folder sent to the engine as build context (default: app)",
    "dockerfile": "Dockerfile, relative to the build context (default: Dockerfile)",
    "base_image": "BASE_IMAGE build argument (default: the Dockerfile's own)",
}


@ops_task(help=HELP, iterable=["tag"])
def build(
    c: Context,
    tag: list[str] | None = None,
    dry_run: bool = False,
    verbose: bool = False,
    build_context: str | None = None,
    dockerfile: str | None = None,
    base_image: str | None = None,
) -> None:
    """Build the app's image (tags latest and v1-YYYYMMDD-HHMM), showing each step."""
    from ops.images import plan_image_build

    settings = settings_for(
        build_context=build_context, dockerfile=dockerfile, base_image=base_image
    )
    if verbose:
        console.explain(settings, BUILD_SETTINGS)

    def act(plan: Plan[BuildPlan]) -> None:
        run_build(settings, plan.work, verbose=verbose)

    # The build shows each step as it goes: its plan is printed on a dry run only.
    plan = plan_image_build(settings, extra_tags=tag or ())
    carry_out(plan, act, dry_run=dry_run, announce=False)


@ops_task(
    help={
        "tag": "An extra local tag to push as well (it must exist); repeatable",
        "dry_run": "Print what would be pushed and touch nothing",
        "verbose": "Show where each setting came from",
    },
    iterable=["tag"],
)
def push(
    c: Context, tag: list[str] | None = None, dry_run: bool = False, verbose: bool = False
) -> None:
    """Push the built image's tags (latest and its version tag) with the configured login."""
    from ops.images import plan_push

    settings = settings_for()
    if verbose:
        console.explain(settings, PUSH_SETTINGS)

    def act(plan: Plan[tuple[str, ...]]) -> None:
        run_push(settings, extra_tags=plan.work)

    carry_out(plan_push(settings, extra_tags=tag or ()), act, dry_run=dry_run, announce=False)


ns = Collection("image", build, push)
