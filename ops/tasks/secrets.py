"""`inv secrets.init`, `inv secrets.apply`, `inv secrets.check`: cluster Secrets from secrets/."""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context

from ops import console
from ops.errors import SecretsError
from ops.tasks.common import Collection, carry_out, ops_task, settings_for

SECRETS_SETTINGS = [
    "kubeconfig",
    "context",
    "allowed_contexts",
    "namespace",
    "secrets_dir",
    "registry",
    "registry_username",
    "registry_password",
]

CLUSTER_HELP = {
    "context": "Kube context (a context outside the allow-list must be named here)",
    "namespace": "Namespace of the Secrets (default: development)",
    "secrets_dir": "Folder of the local secret files (default: secrets)",
    "verbose": "Show where each setting came from",
}


@ops_task(
    help={
        "example": "Template folder (default: secrets.example)",
        "secrets_dir": CLUSTER_HELP["secrets_dir"],
        "dry_run": "Print what would be created and write nothing",
    }
)
def init(
    c: Context,
    example: str | None = None,
    secrets_dir: str | None = None,
    dry_run: bool = False,
) -> None:
    """Create secrets/ from secrets.example/, generating passwords; never overwrites."""
    from ops.secrets import EXAMPLE_DIR, plan_init
    from ops.secrets import init as init_secrets

    settings = settings_for(secrets_dir=secrets_dir)
    plan = plan_init(Path(example) if example else EXAMPLE_DIR, settings.secrets_dir)
    for result in carry_out(plan, init_secrets, dry_run=dry_run, announce=False) or ():
        line = f"{result.path}: {_joined(_past(result.action), result.note)}"
        if result.note:
            console.warn(line)
        else:
            console.success(line)


@ops_task(
    help={
        **CLUSTER_HELP,
        "dry_run": "Print the plan (values masked) and change nothing",
        "yes": "Do not ask before replacing values a Secret already has",
    }
)
def apply(
    c: Context,
    context: str | None = None,
    namespace: str | None = None,
    secrets_dir: str | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
) -> None:
    """Create or update db-credentials and harbor-regcred from the files in secrets/."""
    from ops.secrets import apply as apply_secrets
    from ops.secrets import plan_apply

    settings = settings_for(context=context, namespace=namespace, secrets_dir=secrets_dir)
    if verbose:
        console.explain(settings, SECRETS_SETTINGS)
    changes = carry_out(plan_apply(settings), apply_secrets, dry_run=dry_run, yes=yes)
    for ch in changes or ():
        if ch.action == "unchanged":
            console.success(f"{ch.name}: unchanged")
        else:
            keys = f" ({', '.join(ch.changed_keys)})" if ch.changed_keys else ""
            console.success(f"{ch.name}: {_past(ch.action)}{keys}")


@ops_task(help=CLUSTER_HELP)
def check(
    c: Context,
    context: str | None = None,
    namespace: str | None = None,
    secrets_dir: str | None = None,
    verbose: bool = False,
) -> None:
    """Compare secrets/ with the cluster's Secrets (present, keys, equal) without values."""
    from ops.kube import resolve_target
    from ops.secrets import (
        DB_SECRET,
        PULL_SECRET,
        DesiredSecret,
        compare,
        db_secret,
        pull_secret,
        read_cluster_secrets,
    )

    settings = settings_for(context=context, namespace=namespace, secrets_dir=secrets_dir)
    if verbose:
        console.explain(settings, SECRETS_SETTINGS)
    local: dict[str, DesiredSecret | SecretsError] = {}
    for name, build in ((DB_SECRET, db_secret), (PULL_SECRET, pull_secret)):
        try:
            local[name] = build(settings)
        except SecretsError as error:
            local[name] = error
    target = resolve_target(settings)
    cluster = read_cluster_secrets(target, list(local))
    results = [compare(name, local[name], cluster[name]) for name in local]
    console.table(
        f"Secrets in namespace {target.namespace} (context {target.context})",
        ["secret", "local files", "cluster", "keys", "values", "state"],
        [
            [r.name, r.local, r.cluster, r.keys, r.values, "in sync" if r.in_sync else "DIFFERS"]
            for r in results
        ],
    )
    drifting = [r.name for r in results if not r.in_sync]
    if drifting:
        raise SecretsError(
            f"{', '.join(drifting)} not in sync with secrets/",
            hint="Fix the local files if they are wrong, then run `inv secrets.apply`.",
        )
    console.success("the cluster's Secrets match secrets/")


def _past(action: str) -> str:
    return {
        "copied": "copied from the template",
        "generated": "generated a random value",
        "kept": "kept (exists already)",
        "skipped": "skipped",
        "create": "created",
        "update": "updated",
        "replace": "replaced",
    }.get(action, action)


def _joined(text: str, note: str) -> str:
    return f"{text} ({note})" if note else text


ns = Collection("secrets")
ns.add_task(init)
ns.add_task(apply)
ns.add_task(check)
