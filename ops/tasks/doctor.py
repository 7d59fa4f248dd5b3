"""`inv doctor`: check the engine, the registry, the cluster and the secrets, with hints."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from ops import console
from ops.tasks.common import ops_task, settings_for

DOCTOR_SETTINGS = [
    *("registry", "registry_username", "registry_ca_file"),
    *("kubeconfig", "context", "allowed_contexts", "namespace", "deployment", "secrets_dir"),
]


@ops_task(
    help={
        "context": "Kube context to check (a context outside the allow-list must be named here)",
        "namespace": "Namespace to look for (default: development)",
        "verbose": "Show where each setting came from",
    }
)
def doctor(
    c: Context, context: str | None = None, namespace: str | None = None, verbose: bool = False
) -> None:
    """Check Docker, the registry and its login, the kube context, cluster, ArgoCD, secrets."""
    from ops.doctor import failed, render, run_checks

    settings = settings_for(context=context, namespace=namespace)
    if verbose:
        console.explain(settings, DOCTOR_SETTINGS)
    checks = run_checks(settings)
    for line in render(checks):
        console.info(line)
    if failed(checks):
        raise Exit(code=1)
