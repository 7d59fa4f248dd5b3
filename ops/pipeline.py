"""``inv pipeline``'s plan: build → push → rollout restart, one plan from the three.

The task carries it out step by step (the steps' progress is the task layer's); this module
only decides what will happen, so a dry run needs no engine, registry or cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ops.config import Settings
from ops.images import BuildPlan, build_items, plan_build
from ops.kube import resolve_target
from ops.plan import Plan, items
from ops.rollout import RestartWork, plan_restart


@dataclass(frozen=True, kw_only=True)
class PipelineWork:
    """The steps a pipeline run takes: always a build; a push and a restart if asked."""

    build: BuildPlan
    push: bool
    restart: RestartWork | None


def plan_pipeline(
    settings: Settings, *, extra_tags: Iterable[str] = (), push: bool, rollout: bool
) -> Plan[PipelineWork]:
    """The pipeline's plan; a rollout's kube context is checked here, before any build."""
    build = plan_build(settings, extra_tags=extra_tags)
    rollout = rollout and push
    # Check the kube context before building: a refused context should cost no build.
    restart = plan_restart(settings, resolve_target(settings)) if rollout else None
    lines = list(build_items(build))
    lines += items(("push", f"to {settings.registry}" if push else "no (--no-push)"))
    if push:
        lines += items(("login", settings.registry_username or "(anonymous)"))
    if restart is not None:
        lines += restart.items
        lines += items(("rollout image", f"{settings.image}@<digest of the push> (immutable)"))
    else:
        lines += items(("rollout", "no (--no-rollout)" if push else "no (--no-push)"))
    return Plan(
        title="pipeline",
        items=tuple(lines),
        work=PipelineWork(
            build=build, push=push, restart=restart.work if restart is not None else None
        ),
    )
