"""``inv pipeline``'s plan: build → push → roll out, one plan from the three.

The task carries it out step by step (the steps' progress is the task layer's); this module
only decides what will happen. A dry run needs no engine, registry or cluster. A real run
checks the cluster *before* building: the context, the namespace and the Deployment. With
nothing deployed there, the plan includes ``inv deploy``'s plan (Secrets from ``secrets/``
included), carried out after the push with the pushed digest as the app's image.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ops import kube
from ops.config import Settings
from ops.deploy import DeployWork, plan_deploy
from ops.images import BuildPlan, build_items, plan_build
from ops.kube import KubeTarget, api_errors, resolve_target
from ops.plan import Plan, items
from ops.rollout import RestartWork, plan_restart


@dataclass(frozen=True, kw_only=True)
class PipelineWork:
    """The steps a pipeline run takes: always a build; a push and a restart if asked."""

    build: BuildPlan
    push: bool
    restart: Plan[RestartWork] | None
    deploy: Plan[DeployWork] | None = None  # nothing deployed yet: deploy instead of restart


def deployment_exists(target: KubeTarget, deployment: str) -> bool:
    """Whether the namespace and the app's Deployment in it exist."""
    from kubernetes.client import AppsV1Api

    from ops.errors import NotFound

    try:
        with (
            api_errors("Deployment", name=deployment, namespace=target.namespace),
            kube.client(target) as client,
        ):
            AppsV1Api(client).read_namespaced_deployment(deployment, target.namespace)
    except NotFound:
        return False
    return True


def plan_pipeline(
    settings: Settings,
    *,
    extra_tags: Iterable[str] = (),
    push: bool,
    rollout: bool,
    check_cluster: bool = True,
    undo_on_failure: bool = False,
) -> Plan[PipelineWork]:
    """The pipeline's plan. Before any build: the kube context (always), and unless
    ``check_cluster`` is off (a dry run), the namespace and the Deployment."""
    build = plan_build(settings, extra_tags=extra_tags)
    rollout = rollout and push
    # Check the kube context before building: a refused context should cost no build.
    restart = (
        plan_restart(settings, resolve_target(settings), undo_on_failure=undo_on_failure)
        if rollout
        else None
    )
    deploy: Plan[DeployWork] | None = None
    if restart is not None and check_cluster:
        target = restart.work.target
        if not deployment_exists(target, settings.deployment):
            deploy = plan_deploy(settings)
            if deploy.work.argocd:
                from ops.errors import NotFound

                raise NotFound(
                    f"Deployment {settings.deployment!r} not found in namespace "
                    f"{target.namespace!r}, which ArgoCD (Application {deploy.work.argocd}) "
                    "manages",
                    hint="Let ArgoCD sync the namespace first (its Application's status says "
                    "why it has not); the pipeline does not deploy over ArgoCD.",
                    namespace=target.namespace,
                )
    lines = list(build_items(build))
    lines += items(("push", f"to {settings.registry}" if push else "no (--no-push)"))
    if push:
        lines += items(("login", settings.registry_username or "(anonymous)"))
    if deploy is not None:
        creating = sum(c.action == "create" for c in deploy.work.changes)
        lines += items(
            ("context", deploy.work.target.context),
            ("namespace", deploy.work.target.namespace),
            (
                "deploy",
                f"nothing deployed yet: inv deploy --overlay {deploy.work.overlay} after the "
                f"push ({creating} objects to create, Secrets from {settings.secrets_dir}/)",
            ),
            ("rollout image", f"{settings.image}@<digest of the push> (immutable)"),
        )
    elif restart is not None:
        lines += restart.items
        lines += items(("rollout image", f"{settings.image}@<digest of the push> (immutable)"))
    else:
        lines += items(("rollout", "no (--no-rollout)" if push else "no (--no-push)"))
    return Plan(
        title="pipeline",
        items=tuple(lines),
        warnings=deploy.warnings if deploy is not None else (),
        ask=deploy.ask if deploy is not None else None,
        work=PipelineWork(
            build=build,
            push=push,
            restart=restart,
            deploy=deploy,
        ),
    )
