"""Kubernetes Secrets from local files: ``secrets/`` → ``db-credentials`` and ``harbor-regcred``.

Read the local files, read the cluster, compare, and change only what differs (pyinfra's
way). Values stay inside this module's frozen objects, whose ``repr`` hides them: plans,
reports and errors carry Secret names, key names and states, never a value.

The files (one value each, read by ``ops.textfiles``: any BOM and the trailing line
ending are dropped)::

    secrets/db_username.txt        → db-credentials.username
    secrets/db_password.txt        → db-credentials.password
    secrets/registry_username.txt  → harbor-regcred (.dockerconfigjson for the registry)
    secrets/registry_password.txt  ┘  (also used by `inv image.push`, via the settings)
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets as random_source
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ops import kube, textfiles
from ops.config import MASK, Settings, env_var
from ops.errors import ClusterError, FileError, NotFound, SecretsError
from ops.kube import DEPLOY_HINT, KubeTarget, api_errors, resolve_target
from ops.plan import Ask, Item, Plan

if TYPE_CHECKING:
    from kubernetes.client import CoreV1Api, V1Secret

DB_SECRET = "db-credentials"
PULL_SECRET = "harbor-regcred"
DB_USERNAME_FILE = "db_username.txt"
DB_PASSWORD_FILE = "db_password.txt"
REGISTRY_USERNAME_FILE = "registry_username.txt"
REGISTRY_PASSWORD_FILE = "registry_password.txt"
DOCKERCONFIGJSON = ".dockerconfigjson"
EXAMPLE_DIR = Path("secrets.example")
GENERATE = "<generate>"
MANAGED_BY = {"app.kubernetes.io/managed-by": "manifest-secrets"}

SecretType = Literal["Opaque", "kubernetes.io/dockerconfigjson"]
Action = Literal["create", "update", "replace", "unchanged"]
InitAction = Literal["copied", "generated", "kept", "skipped"]

# Values a template or a hurried human leaves behind: never shipped to a cluster.
_PLACEHOLDER = re.compile(r"^<[^<>]*>$|^(changeme|change[-_ ]me|todo|placeholder|xxx+)$", re.I)
# Files in secrets.example/ that explain the folder and are not secrets themselves.
_NOT_A_SECRET = re.compile(r"^(readme.*|\..*)$", re.I)


@dataclass(frozen=True, kw_only=True)
class DesiredSecret:
    """A Secret as the local files say it should be."""

    name: str
    type: SecretType
    data: Mapping[str, bytes] = field(repr=False)
    origin: str  # where the values came from, for messages ("secrets/db_*.txt")


@dataclass(frozen=True, kw_only=True)
class ClusterSecret:
    """A Secret as the cluster has it."""

    name: str
    type: str
    data: Mapping[str, bytes] = field(repr=False)
    resource_version: str
    labels: Mapping[str, str]
    immutable: bool


@dataclass(frozen=True, kw_only=True)
class SecretChange:
    """What applying one Secret would do; ``changed_keys`` names keys, never values."""

    name: str
    type: SecretType
    action: Action
    changed_keys: tuple[str, ...]
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class InitResult:
    """What ``secrets.init`` did (or would do) with one template file."""

    path: Path
    action: InitAction
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """Local files against the cluster, for one Secret; no value, only their agreement."""

    name: str
    local: str  # "ok" or what is wrong with the files
    cluster: str  # "present" or "absent"
    keys: str  # "same" or how they differ
    values: str  # "equal", "differ: a, b" or "-"
    in_sync: bool


# --- local files ------------------------------------------------------------------------


_INIT_VERBS: dict[InitAction, str] = {
    "copied": "copy",
    "generated": "generate",
    "kept": "keep",
    "skipped": "skip",
}


@dataclass(frozen=True, kw_only=True)
class InitWork:
    """What ``init`` writes: each template's file in ``secrets_dir``, decided beforehand."""

    example_dir: Path
    secrets_dir: Path
    files: tuple[InitResult, ...]


def plan_init(example_dir: Path, secrets_dir: Path) -> Plan[InitWork]:
    """secrets.init's plan (nothing written): per template, copy it, generate a value, or
    keep the file that is there; a placeholder left to edit is said in the line."""
    if not example_dir.is_dir():
        raise SecretsError(
            f"template folder {example_dir} not found",
            hint="Run this from the project's root folder (where secrets.example/ is).",
        )
    templates = sorted(
        p for p in example_dir.iterdir() if p.is_file() and not _NOT_A_SECRET.match(p.name)
    )
    files = []
    for template in templates:
        target = secrets_dir / template.name
        if target.exists():
            note = "still a placeholder: edit it" if _is_placeholder(_peek(target)) else ""
            files.append(InitResult(path=target, action="kept", note=note))
            continue
        text = textfiles.read_text(template).strip()
        generate = text == GENERATE
        action: InitAction = "generated" if generate else "copied"
        note = "" if generate or not _is_placeholder(text) else "placeholder: edit it"
        files.append(InitResult(path=target, action=action, note=note))
    return Plan(
        title="secrets.init",
        items=tuple(
            Item(
                key=str(f.path),
                value=f"{_INIT_VERBS[f.action]} ({f.note})" if f.note else _INIT_VERBS[f.action],
            )
            for f in files
        ),
        work=InitWork(example_dir=example_dir, secrets_dir=secrets_dir, files=tuple(files)),
    )


def init(plan: Plan[InitWork]) -> list[InitResult]:
    """Carry out secrets.init's plan: never overwrites anything (a file that appeared since
    the plan is an error); a generated value is 256 bits, URL-safe; new files and the
    folder are readable by their owner only."""
    work = plan.work
    work.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for result in work.files:
        if result.action == "generated":
            _write_new(result.path, random_source.token_urlsafe(32) + "\n")
        elif result.action == "copied":
            _write_new(result.path, textfiles.read_text(work.example_dir / result.path.name))
    return list(work.files)


def init_secrets(example_dir: Path, secrets_dir: Path) -> list[InitResult]:
    """Copy every template into ``secrets_dir`` without overwriting anything (plan, then
    act: ``init(plan_init(...))``)."""
    return init(plan_init(example_dir, secrets_dir))


def read_value(path: Path) -> str:
    """One secret value from a file (``ops.textfiles``); empty or placeholder refused."""
    try:
        value = textfiles.read_value(path)
    except FileNotFoundError as exc:
        raise SecretsError(f"{path} does not exist") from exc
    return _checked(value, str(path))


def dockerconfigjson(registry: str, username: str, password: str) -> bytes:
    """The ``.dockerconfigjson`` of a kubernetes.io/dockerconfigjson Secret for one registry."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    config = {"auths": {registry: {"username": username, "password": password, "auth": auth}}}
    return json.dumps(config, separators=(",", ":"), sort_keys=True).encode()


def db_secret(settings: Settings) -> DesiredSecret:
    folder = settings.secrets_dir
    return DesiredSecret(
        name=DB_SECRET,
        type="Opaque",
        data={
            "username": read_value(folder / DB_USERNAME_FILE).encode(),
            "password": read_value(folder / DB_PASSWORD_FILE).encode(),
        },
        origin=f"{folder / DB_USERNAME_FILE}, {folder / DB_PASSWORD_FILE}",
    )


def pull_secret(settings: Settings) -> DesiredSecret:
    """harbor-regcred from the registry settings (secrets/registry_*.txt, or overridden)."""
    username = _setting_value(settings, "registry_username", REGISTRY_USERNAME_FILE)
    password = _setting_value(settings, "registry_password", REGISTRY_PASSWORD_FILE)
    return DesiredSecret(
        name=PULL_SECRET,
        type="kubernetes.io/dockerconfigjson",
        data={DOCKERCONFIGJSON: dockerconfigjson(settings.registry, username, password)},
        origin=f"registry {settings.registry}, credentials from "
        + _where(settings, "registry_username", REGISTRY_USERNAME_FILE)
        + ", "
        + _where(settings, "registry_password", REGISTRY_PASSWORD_FILE),
    )


def desired_secrets(settings: Settings) -> list[DesiredSecret]:
    """Both Secrets from the local files; the first problem found is raised."""
    return [db_secret(settings), pull_secret(settings)]


@dataclass(frozen=True, kw_only=True)
class ApplyWork:
    """What ``apply`` needs to carry out a ``secrets.apply`` plan (values inside, unprinted)."""

    target: KubeTarget
    desired: tuple[DesiredSecret, ...]
    changes: tuple[SecretChange, ...]
    current: Mapping[str, ClusterSecret | None] = field(repr=False)


# --- the plan, and acting on it -----------------------------------------------------------


def plan_apply(settings: Settings, *, title: str = "secrets.apply") -> Plan[ApplyWork]:
    """Read secrets/ and the cluster; what applying would change, values masked.

    Asks before it overwrites values a Secret already has (the user types the namespace).
    """
    desired = desired_secrets(settings)
    target = resolve_target(settings)
    current = read_cluster_secrets(target, [d.name for d in desired])
    return plan_from(target, desired, current, title=title)


def plan_from(
    target: KubeTarget,
    desired: Sequence[DesiredSecret],
    current: Mapping[str, ClusterSecret | None],
    *,
    title: str = "secrets.apply",
) -> Plan[ApplyWork]:
    """The plan of applying ``desired`` over ``current`` (pure)."""
    changes = plan_changes(desired, current)
    lines = [Item(key="target", value=f"namespace {target.namespace} (context {target.context})")]
    for want, change in zip(desired, changes, strict=True):
        keys = ", ".join(f"{k}={MASK}" for k in change.changed_keys)
        detail = (
            change.action
            + (f": {keys}" if keys else "")
            + (f" — {change.reason}" if change.reason else "")
        )
        lines += [Item(key=want.name, value=detail), Item(key="", value=f"from {want.origin}")]
    overwriting = [ch for ch in changes if ch.action in ("update", "replace")]
    warnings = []
    if any(ch.name == DB_SECRET and "password" in ch.changed_keys for ch in overwriting):
        warnings.append(
            "PostgreSQL keeps the password it was initialised with: change it in the database "
            "too (ALTER ROLE), then restart the app so it reads the new value."
        )
    ask = None
    if overwriting:
        ask = Ask(
            prompt=f"This replaces values in {len(overwriting)} existing Secret(s) in "
            f"{target.namespace!r}. Type the namespace to go on:",
            expected=target.namespace,
        )
    return Plan(
        title=title,
        items=tuple(lines),
        warnings=tuple(warnings),
        ask=ask,
        work=ApplyWork(
            target=target, desired=tuple(desired), changes=tuple(changes), current=current
        ),
    )


def apply(plan: Plan[ApplyWork]) -> tuple[SecretChange, ...]:
    """Carry out a ``plan_apply`` plan; returns what was done per Secret."""
    work = plan.work
    apply_changes(work.target, work.desired, work.changes, work.current)
    return work.changes


# --- comparing --------------------------------------------------------------------------


def plan_changes(
    desired: Sequence[DesiredSecret], current: Mapping[str, ClusterSecret | None]
) -> list[SecretChange]:
    """What applying ``desired`` over the cluster's ``current`` Secrets would change."""
    changes = []
    for want in desired:
        have = current.get(want.name)
        if have is None:
            changes.append(_change(want, "create", tuple(sorted(want.data))))
            continue
        differing = differing_keys(want, have)
        if have.type != want.type:
            reason = f"its type is {have.type}; the type of a Secret cannot change in place"
            changes.append(_change(want, "replace", differing or tuple(want.data), reason))
        elif not differing:
            changes.append(_change(want, "unchanged", ()))
        elif have.immutable:
            reason = "it is immutable; it is deleted and created again"
            changes.append(_change(want, "replace", differing, reason))
        else:
            changes.append(_change(want, "update", differing))
    return changes


def differing_keys(want: DesiredSecret, have: ClusterSecret) -> tuple[str, ...]:
    """Keys missing on either side or holding another value (a docker config by meaning)."""
    keys = sorted(set(want.data) | set(have.data))
    return tuple(k for k in keys if not _same_value(k, want.data.get(k), have.data.get(k)))


def compare(
    name: str, desired: DesiredSecret | SecretsError, have: ClusterSecret | None
) -> CheckResult:
    """One row of ``secrets.check``: ``desired`` is the local Secret or why it is missing."""
    cluster = "present" if have is not None else "absent"
    if isinstance(desired, SecretsError):
        return CheckResult(
            name=name, local=desired.message, cluster=cluster, keys="-", values="-", in_sync=False
        )
    if have is None:
        return CheckResult(
            name=name, local="ok", cluster=cluster, keys="-", values="-", in_sync=False
        )
    only_local = sorted(set(desired.data) - set(have.data))
    only_cluster = sorted(set(have.data) - set(desired.data))
    keys = "same"
    if only_local or only_cluster:
        parts = [f"missing in cluster: {', '.join(only_local)}"] if only_local else []
        parts += [f"only in cluster: {', '.join(only_cluster)}"] if only_cluster else []
        keys = "; ".join(parts)
    shared = sorted(set(desired.data) & set(have.data))
    unequal = [k for k in shared if not _same_value(k, desired.data[k], have.data[k])]
    values = f"differ: {', '.join(unequal)}" if unequal else "equal"
    if have.type != desired.type:
        keys = f"type {have.type}, expected {desired.type}" + (
            "" if keys == "same" else "; " + keys
        )
    in_sync = keys == "same" and not unequal
    return CheckResult(
        name=name, local="ok", cluster=cluster, keys=keys, values=values, in_sync=in_sync
    )


# --- the cluster ------------------------------------------------------------------------


def read_cluster_secrets(
    target: KubeTarget, names: Sequence[str]
) -> dict[str, ClusterSecret | None]:
    """The named Secrets in the target namespace (None where absent)."""
    from kubernetes.client import CoreV1Api

    with kube.client(target) as client:
        api = CoreV1Api(client)
        return {name: _read_secret(api, name, target.namespace) for name in names}


def apply_changes(
    target: KubeTarget,
    desired: Sequence[DesiredSecret],
    changes: Sequence[SecretChange],
    current: Mapping[str, ClusterSecret | None],
) -> None:
    """Carry out a plan from ``plan_changes``; ``unchanged`` Secrets are not touched.

    An update names the resourceVersion it read, so a concurrent change makes it fail
    instead of being overwritten unseen.
    """
    from kubernetes.client import CoreV1Api

    by_name = {d.name: d for d in desired}
    with kube.client(target) as client:
        api = CoreV1Api(client)
        for change in changes:
            want = by_name[change.name]
            have = current.get(change.name)
            if change.action == "create":
                _create(api, want, target.namespace, labels={})
            elif change.action == "update" and have is not None:
                _update(api, want, have, target.namespace)
            elif change.action == "replace" and have is not None:
                with api_errors("Secret", name=want.name, namespace=target.namespace):
                    api.delete_namespaced_secret(want.name, target.namespace)
                _create(api, want, target.namespace, labels=dict(have.labels))


def _read_secret(api: CoreV1Api, name: str, namespace: str) -> ClusterSecret | None:
    try:
        with api_errors("Secret", name=name, namespace=namespace):
            secret = api.read_namespaced_secret(name, namespace)
    except NotFound:
        return None
    data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
    metadata = secret.metadata
    return ClusterSecret(
        name=name,
        type=secret.type or "Opaque",
        data=data,
        resource_version=(metadata.resource_version if metadata else None) or "",
        labels=dict((metadata.labels if metadata else None) or {}),
        immutable=bool(secret.immutable),
    )


def _body(
    want: DesiredSecret,
    namespace: str,
    labels: Mapping[str, str],
    resource_version: str | None = None,
) -> V1Secret:
    from kubernetes.client import V1ObjectMeta, V1Secret

    metadata = V1ObjectMeta(
        name=want.name, namespace=namespace, labels=dict(labels), resource_version=resource_version
    )
    return V1Secret(
        metadata=metadata,
        type=want.type,
        data={k: base64.b64encode(v).decode("ascii") for k, v in want.data.items()},
    )


def _create(api: CoreV1Api, want: DesiredSecret, namespace: str, labels: Mapping[str, str]) -> None:
    from kubernetes.client.exceptions import ApiException

    body = _body(want, namespace, {**labels, **MANAGED_BY})
    try:
        with api_errors("Secret", name=want.name, namespace=namespace):
            api.create_namespaced_secret(namespace, body)
    except NotFound as exc:
        raise NotFound(
            f"namespace {namespace!r} not found",
            hint=DEPLOY_HINT,
            namespace=namespace,
        ) from exc
    except ClusterError as exc:
        cause = exc.__cause__
        if isinstance(cause, ApiException) and cause.status == 409:
            raise ClusterError(
                f"Secret {want.name!r} appeared in namespace {namespace!r} while applying",
                hint="Someone else is changing it; run the task again to see the new state.",
            ) from exc
        raise


def _update(api: CoreV1Api, want: DesiredSecret, have: ClusterSecret, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    body = _body(want, namespace, {**have.labels, **MANAGED_BY}, have.resource_version)
    try:
        with api_errors("Secret", name=want.name, namespace=namespace):
            api.replace_namespaced_secret(want.name, namespace, body)
    except ClusterError as exc:
        cause = exc.__cause__
        if isinstance(cause, ApiException) and cause.status == 409:
            raise ClusterError(
                f"Secret {want.name!r} in namespace {namespace!r} changed while applying",
                hint="Nothing was overwritten; run the task again to see the new state.",
            ) from exc
        raise


# --- helpers ----------------------------------------------------------------------------


def _change(
    want: DesiredSecret, action: Action, keys: tuple[str, ...], reason: str = ""
) -> SecretChange:
    return SecretChange(
        name=want.name, type=want.type, action=action, changed_keys=keys, reason=reason
    )


def _same_value(key: str, a: bytes | None, b: bytes | None) -> bool:
    if a is None or b is None:
        return False
    if key == DOCKERCONFIGJSON:
        try:
            return bool(json.loads(a) == json.loads(b))
        except ValueError:
            return False
    return a == b


def _checked(value: str, where: str) -> str:
    if not value.strip():
        raise SecretsError(
            f"{where} is empty",
            hint="Write the value into it (or run `inv secrets.init` to generate passwords).",
        )
    if _is_placeholder(value):
        raise SecretsError(
            f"{where} still holds a placeholder ({_shape(value)})",
            hint="Replace it with the real value.",
        )
    if "\n" in value or "\r" in value:
        raise SecretsError(f"{where} holds more than one line", hint="Keep one value on one line.")
    return value


def _setting_value(settings: Settings, name: str, file_name: str) -> str:
    value = str(getattr(settings, name))
    where = _where(settings, name, file_name)
    if not value:
        raise SecretsError(
            f"{where} is empty or missing",
            hint=f"Write it into {settings.secrets_dir / file_name} or set {env_var(name)}.",
        )
    return _checked(value, where)


def _where(settings: Settings, name: str, file_name: str) -> str:
    source = settings.source_of(name)
    if source in ("secrets/", "default"):
        return str(settings.secrets_dir / file_name)
    if source == "flag":
        return f"--{name.replace('_', '-')}"
    return f"{env_var(name)} (from {source})"


def _is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value.strip()))


def _shape(value: str) -> str:
    """A placeholder is shown only when it is one: template text, not a secret."""
    return value.strip() if len(value) <= 40 else "a template value"


def _peek(path: Path) -> str:
    try:
        return textfiles.read_text(path).strip()
    except (OSError, FileError):
        return ""


def _write_new(path: Path, text: str) -> None:
    # O_EXCL: a file that appeared meanwhile is never overwritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
