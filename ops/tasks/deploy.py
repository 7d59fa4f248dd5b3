"""`inv deploy`: the overlay's objects into a namespace, server-side applied, then ready."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke.context import Context

from ops import console
from ops.tasks.common import carry_out, ops_task, settings_for, show_plan
from ops.tasks.render import run_deploy

if TYPE_CHECKING:
    from ops.deploy import DeployReport, DeployWork
    from ops.plan import Plan

DEPLOY_SETTINGS = [
    "kubeconfig",
    "context",
    "allowed_contexts",
    "namespace",
    "overlay",
    "manifests_dir",
    "deployment",
    "rollout_timeout",
    "secrets_dir",
]


@ops_task(
    help={
        "overlay": "Overlay to apply: development, staging, production or test "
        "(default: development)",
        "namespace": "Namespace to deploy into, any name (default: development); created if absent",
        "context": "Kube context (a context outside the allow-list must be named here)",
        "prune": "Also delete objects deploy applied before that left the manifests "
        "(planned, asked; never a PersistentVolumeClaim)",
        "dry_run": "Print the plan (create / change / unchanged per object) and touch nothing",
        "yes": "Do not ask before replacing Secret values or pruning",
        "timeout": "Seconds to wait for PostgreSQL and the app to be ready (default: 300)",
        "no_wait": "Apply and return; do not wait until PostgreSQL and the app are ready",
        "image": "Run this image in the app's container instead of the overlay's "
        "(e.g. registry/repo@sha256:...)",
        "verbose": "Show where each setting came from",
    }
)
def deploy(
    c: Context,
    overlay: str | None = None,
    namespace: str | None = None,
    context: str | None = None,
    prune: bool = False,
    dry_run: bool = False,
    yes: bool = False,
    timeout: float | None = None,
    no_wait: bool = False,
    image: str | None = None,
    verbose: bool = False,
) -> None:
    """Apply an overlay (server-side, no kubectl) into a namespace and wait until it is ready."""
    from ops.deploy import plan_deploy

    settings = settings_for(
        overlay=overlay, namespace=namespace, context=context, rollout_timeout=timeout
    )
    if verbose:
        console.explain(settings, DEPLOY_SETTINGS)
    plan = plan_deploy(settings, prune=prune, image=image)
    if plan.work.argocd:
        show_plan(plan, dry_run=dry_run)  # says that ArgoCD owns them; nothing to act on
        return

    def act(plan: Plan[DeployWork]) -> DeployReport:
        return run_deploy(plan, wait=not no_wait)

    carry_out(plan, act, dry_run=dry_run, yes=yes)
