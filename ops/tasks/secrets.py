"""`inv secrets.init`, `inv secrets.apply`, `inv secrets.check`: cluster Secrets from secrets/."""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit

from ops import console
from ops.errors import SecretsError
from ops.tasks.common import Collection, confirm, ops_task, settings_for

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
MASK = "********"

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
    from ops.secrets import EXAMPLE_DIR, init_secrets

    settings = settings_for(secrets_dir=secrets_dir)
    results = init_secrets(
        Path(example) if example else EXAMPLE_DIR, settings.secrets_dir, dry_run=dry_run
    )
    verb = {"copied": "copy", "generated": "generate", "kept": "keep", "skipped": "skip"}
    if dry_run:
        console.plan(
            "secrets.init would:",
            [(str(r.path), _joined(verb[r.action], r.note)) for r in results],
        )
        console.info("Dry run: nothing was written.")
        return
    for result in results:
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
    from ops.kube import resolve_target
    from ops.secrets import DB_SECRET, apply_changes, desired_secrets, plan_changes
    from ops.secrets import read_cluster_secrets as read

    settings = settings_for(context=context, namespace=namespace, secrets_dir=secrets_dir)
    if verbose:
        console.explain(settings, SECRETS_SETTINGS)
    desired = desired_secrets(settings)
    target = resolve_target(settings)
    current = read(target, [d.name for d in desired])
    changes = plan_changes(desired, current)

    where = f"namespace {target.namespace} (context {target.context})"
    items = [("target", where)]
    for d, ch in zip(desired, changes, strict=True):
        keys = ", ".join(f"{k}={MASK}" for k in ch.changed_keys)
        detail = (
            ch.action + (f": {keys}" if keys else "") + (f" — {ch.reason}" if ch.reason else "")
        )
        items.append((d.name, detail))
        items.append(("", f"from {d.origin}"))
    console.plan("secrets.apply " + ("would:" if dry_run else "plan:"), items)

    overwriting = [ch for ch in changes if ch.action in ("update", "replace")]
    if any(ch.name == DB_SECRET and "password" in ch.changed_keys for ch in overwriting):
        console.warn(
            "PostgreSQL keeps the password it was initialised with: change it in the database "
            "too (ALTER ROLE), then restart the app so it reads the new value."
        )
    if dry_run:
        console.info("Dry run: nothing was changed.")
        return
    if overwriting and not yes and not _confirm_overwrite(len(overwriting), target.namespace):
        raise Exit("Not confirmed; nothing was changed.", code=1)
    apply_changes(target, desired, changes, current)
    for ch in changes:
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


def _confirm_overwrite(count: int, namespace: str) -> bool:
    return confirm(
        f"This replaces values in {count} existing Secret(s) in {namespace!r}. "
        "Type the namespace to go on:",
        expected=namespace,
    )


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
