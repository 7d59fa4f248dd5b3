"""`inv doctor`: is everything the suite needs there? Each check passes or fails with a hint.

Checks that depend on an earlier one (the namespace needs the cluster, the cluster needs a
context) are skipped, not failed, when that one failed: one cause, one red line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ops import kube
from ops.config import Settings
from ops.errors import OpsError
from ops.kube import KubeTarget, api_errors, resolve_target

if TYPE_CHECKING:
    from ops.registry import Registry

Outcome = Literal["ok", "fail", "skip"]
MARKS: dict[Outcome, str] = {"ok": "✓", "fail": "✗", "skip": "-"}


@dataclass(frozen=True, kw_only=True)
class Check:
    """One line of the doctor's report."""

    name: str
    outcome: Outcome
    detail: str
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def render(checks: Sequence[Check]) -> list[str]:
    """The report as plain lines: a mark, the check, what was found, and a hint if it failed."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for check in checks:
        line = f"{MARKS[check.outcome]} {check.name.ljust(width)}  {check.detail}"
        if check.outcome == "fail" and check.hint:
            line += f"\n  {' ' * width}  hint: {check.hint}"
        lines.append(line)
    failed = sum(1 for c in checks if c.outcome == "fail")
    skipped = sum(1 for c in checks if c.outcome == "skip")
    summary = f"{len(checks) - failed - skipped} ok, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    lines.append(summary)
    return lines


def failed(checks: Sequence[Check]) -> bool:
    return any(c.outcome == "fail" for c in checks)


def run_checks(settings: Settings, *, project_root: Path = Path(".")) -> list[Check]:
    """Run every check in order; never raises for a failing check."""
    checks = [_docker_engine(), *_registry(settings)]
    checks += _cluster(settings)
    checks.append(_secret_files(settings, project_root))
    return checks


def _attempt(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name=name, outcome="ok", detail=probe())
    except OpsError as error:
        return Check(name=name, outcome="fail", detail=error.message, hint=error.hint)


def _docker_engine() -> Check:
    from ops.images import engine_address, engine_version

    return _attempt("Docker engine", lambda: f"{engine_version()} at {engine_address()}")


def _registry(settings: Settings) -> list[Check]:
    from ops.registry import Registry, check

    registry = Registry.from_settings(settings)
    try:
        result = check(registry)
    except OpsError as error:
        return [
            Check(name="registry", outcome="fail", detail=error.message, hint=error.hint),
            _skipped("registry login", "the registry check failed"),
            _skipped("registry push", "the registry check failed"),
        ]
    reachable = Check(name="registry", outcome="ok", detail=f"{registry.host} ({result.url})")
    login = {
        "accepted": Check(
            name="registry login",
            outcome="ok",
            detail=f"accepted for {registry.username!r}",
        ),
        "anonymous": Check(
            name="registry login", outcome="ok", detail="not needed (anonymous access)"
        ),
        "refused": Check(
            name="registry login",
            outcome="fail",
            detail=f"refused for {registry.username!r}",
            hint="Fix secrets/registry_password.txt or MANIFEST_REGISTRY_PASSWORD.",
        ),
        "no credentials": Check(
            name="registry login",
            outcome="fail",
            detail="the registry needs a login and no credentials are set",
            hint="Put them in secrets/registry_username.txt and secrets/registry_password.txt.",
        ),
    }[result.login]
    return [reachable, login, _registry_push(registry, settings, login)]


def _registry_push(registry: Registry, settings: Settings, login: Check) -> Check:
    """Whether the login may push the app's image (a Harbor account may be pull-only)."""
    from ops.registry import push_allowed

    name, repository = "registry push", settings.image_repository
    if not login.ok:
        return _skipped(name, "no accepted login")
    try:
        allowed = push_allowed(registry, repository)
    except OpsError as error:
        return Check(name=name, outcome="fail", detail=error.message, hint=error.hint)
    if allowed:
        return Check(name=name, outcome="ok", detail=f"allowed to {repository}")
    who = repr(registry.username) if registry.username else "anonymous"
    return Check(
        name=name,
        outcome="fail",
        detail=f"{who} may not push to {repository} (a pull-only account?)",
        hint="inv image.push and inv pipeline need an account with push permission (in "
        "Harbor: a robot account with push, or a member with the developer role).",
    )


def _cluster(settings: Settings) -> list[Check]:
    names = ("kube context", "cluster", "namespace", "Deployment", "Ingress")
    try:
        target = resolve_target(settings)
    except OpsError as error:
        first = Check(name=names[0], outcome="fail", detail=error.message, hint=error.hint)
        return [first, *(_skipped(n, "no usable kube context") for n in names[1:])]
    allowed = "allowed" if target.context in settings.allowed_contexts else "named with --context"
    checks = [Check(name="kube context", outcome="ok", detail=f"{target.context} ({allowed})")]
    cluster = _attempt("cluster", lambda: _cluster_version(target))
    if not cluster.ok:
        cluster = Check(
            name="cluster",
            outcome="fail",
            detail=_short_connection_error(cluster.detail),
            hint=cluster.hint,
        )
    checks.append(cluster)
    if not cluster.ok:
        return [*checks, *(_skipped(n, "cluster unreachable") for n in names[2:])]
    namespace = _attempt("namespace", lambda: _read_namespace(target))
    if not namespace.ok:
        namespace = Check(
            name="namespace",
            outcome="fail",
            detail=namespace.detail,
            hint="Run `inv deploy` to create it and deploy the app, or pass --namespace NAME.",
        )
    checks.append(namespace)
    if not namespace.ok:
        return [
            *checks,
            *(_skipped(n, "namespace missing") for n in names[3:]),
            *_argocd(target),
        ]
    checks.append(_attempt("Deployment", lambda: _read_deployment(target, settings.deployment)))
    try:
        checks.append(ingress_check(_list_ingresses(target)))
    except OpsError as error:
        checks.append(Check(name="Ingress", outcome="fail", detail=error.message, hint=error.hint))
    return [*checks, *_argocd(target)]


def _argocd(target: KubeTarget) -> list[Check]:
    """One line per ArgoCD Application deploying into the namespace; none without ArgoCD."""
    from ops.argocd import applications_for

    try:
        apps = applications_for(target)
    except OpsError as error:  # e.g. not allowed to list Applications: say so, fail nothing
        return [_skipped("ArgoCD", f"cannot list its Applications ({error.message})")]
    if apps is None:
        return []
    if not apps:
        detail = f"no Application deploys to namespace {target.namespace!r} (inv deploy does)"
        return [Check(name="ArgoCD", outcome="ok", detail=detail)]
    return [
        Check(
            name="ArgoCD",
            outcome="ok" if app.ok else "fail",
            detail=app.describe(),
            hint=f"ArgoCD owns {target.namespace!r}: fix k8s/ in git or the cluster, then let "
            f"it sync (`kubectl -n {app.namespace} describe application {app.name}`).",
        )
        for app in apps
    ]


def ingress_check(ingresses: Sequence[dict[str, Any]]) -> Check:
    """Where the namespace's Ingresses answer: their URLs and the address an ingress controller
    published in their status (pure: tested on recorded objects). No address means no
    controller serves their class."""
    if not ingresses:
        return _skipped("Ingress", "no Ingress in the namespace")
    found, missing = [], []
    for ingress in ingresses:
        name = ingress["metadata"]["name"]
        spec = ingress.get("spec") or {}
        klass = spec.get("ingressClassName") or "(default class)"
        urls = []
        for rule in spec.get("rules") or []:
            paths = [p.get("path", "/") for p in (rule.get("http") or {}).get("paths") or []]
            urls.append(f"http://{rule.get('host') or '*'}{', '.join(paths)}")
        balancer = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        addresses = [b.get("ip") or b.get("hostname") for b in balancer if b]
        if addresses:
            found.append(f"{name}: {' '.join(urls)} at {', '.join(addresses)} (class {klass})")
        else:
            missing.append(f"{name} (class {klass}) has no address")
    if missing:
        return Check(
            name="Ingress",
            outcome="fail",
            detail="; ".join(missing + found),
            hint="No ingress controller serves that class: install one (Docker Desktop: "
            "ingress-nginx; the lab's cluster-up starts Traefik for class nginx).",
        )
    return Check(name="Ingress", outcome="ok", detail="; ".join(found))


def _list_ingresses(target: KubeTarget) -> list[dict[str, Any]]:
    from kubernetes.client import NetworkingV1Api

    with api_errors("Ingress", namespace=target.namespace), kube.client(target) as client:
        listed = NetworkingV1Api(client).list_namespaced_ingress(
            target.namespace, _request_timeout=5
        )
        items: list[dict[str, Any]] = [client.sanitize_for_serialization(i) for i in listed.items]
    return items


def _short_connection_error(detail: str) -> str:
    """urllib3 nests its reason three deep; keep the address and the reason."""
    found = re.search(
        r"host='([^']+)', port=(\d+)\).*?(Connection refused|timed out|"
        r"Name or service not known|certificate verify failed)",
        detail,
    )
    if found is None:
        return detail
    host, port, reason = found.groups()
    return f"cannot reach the Kubernetes API at {host}:{port} ({reason.lower()})"


def _skipped(name: str, why: str) -> Check:
    return Check(name=name, outcome="skip", detail=f"skipped: {why}")


def _cluster_version(target: KubeTarget) -> str:
    from kubernetes.client import VersionApi

    with api_errors("cluster version"), kube.client(target) as client:
        version = VersionApi(client).get_code(_request_timeout=5)
        host = client.configuration.host
    return f"Kubernetes {version.git_version} ({host})"


def _read_namespace(target: KubeTarget) -> str:
    from kubernetes.client import CoreV1Api

    with api_errors("namespace", name=target.namespace), kube.client(target) as client:
        CoreV1Api(client).read_namespace(target.namespace, _request_timeout=5)
    return target.namespace


def _read_deployment(target: KubeTarget, deployment: str) -> str:
    from ops.rollout import read_status

    status = read_status(target, deployment)
    return f"{deployment}: {status.ready}/{status.desired} ready ({status.phase})"


def _secret_files(settings: Settings, root: Path) -> Check:
    """Every template in secrets.example/ has its filled-in twin in the secrets folder.

    The registry credentials may come from the environment instead of a file.
    """
    example = root / "secrets.example"
    wanted = sorted(
        p.name.removesuffix(".example")
        for p in example.glob("*")
        if p.is_file() and not p.name.startswith(".") and p.name != "README.md"
    )
    from_settings = {
        "registry_username.txt": bool(settings.registry_username),
        "registry_password.txt": bool(settings.registry_password),
    }
    missing = [
        name
        for name in wanted
        if not (settings.secrets_dir / name).is_file() and not from_settings.get(name)
    ]
    if missing:
        return Check(
            name="secrets files",
            outcome="fail",
            detail=f"missing in {settings.secrets_dir}/: {', '.join(missing)}",
            hint=f"Copy the templates from {example}/ and fill them in (secrets/ is git-ignored).",
        )
    if not wanted:
        return Check(name="secrets files", outcome="ok", detail=f"no templates in {example}/")
    return Check(name="secrets files", outcome="ok", detail=f"present: {', '.join(wanted)}")
