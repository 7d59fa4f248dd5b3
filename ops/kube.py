"""The one door to the Kubernetes API: context choice, clients, and error translation.

The kubernetes package is imported inside these functions: importing it costs ~200 ms and
``inv --list`` must not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ops.config import Settings
from ops.errors import ClusterError, ContextError, NotFound

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


@dataclass(frozen=True, kw_only=True)
class KubeTarget:
    """Where a task acts: a kubeconfig, a context in it, and a namespace."""

    kubeconfig: Path | None
    context: str
    namespace: str


def list_contexts(kubeconfig: Path | None) -> tuple[list[str], str | None]:
    """Context names in the kubeconfig and its current context."""
    from kubernetes import config as kube_config
    from kubernetes.config.config_exception import ConfigException

    try:
        contexts, current = kube_config.list_kube_config_contexts(
            config_file=str(kubeconfig) if kubeconfig else None
        )
    except (ConfigException, OSError) as exc:
        raise ContextError(
            f"no usable kubeconfig ({exc})",
            hint="Set KUBECONFIG (or MANIFEST_KUBECONFIG) to a kubeconfig file, "
            "or enable Kubernetes in Docker Desktop.",
        ) from exc
    names = [c["name"] for c in contexts]
    return names, (current or {}).get("name")


def resolve_target(settings: Settings) -> KubeTarget:
    """Pick the context and refuse one outside the allow-list unless given with --context."""
    names, current = list_contexts(settings.kubeconfig)
    context = settings.context or current
    if not context:
        raise ContextError(
            "the kubeconfig has no current context",
            hint="Name one with --context NAME (`kubectl config get-contexts` lists them).",
        )
    if context not in names:
        raise ContextError(
            f"kube context {context!r} is not in the kubeconfig (known: {', '.join(names)})",
            hint="Pick one of the known contexts with --context NAME.",
            context=context,
        )
    explicit = settings.source_of("context") == "flag"
    if context not in settings.allowed_contexts and not explicit:
        raise ContextError(
            f"kube context {context!r} is not on the allow-list "
            f"({', '.join(settings.allowed_contexts)})",
            hint=f"If you mean it, name it explicitly: --context {context}",
            context=context,
        )
    return KubeTarget(kubeconfig=settings.kubeconfig, context=context, namespace=settings.namespace)


def api_client(target: KubeTarget) -> ApiClient:
    """A fresh ApiClient for the target's context (never a shared global one)."""
    from kubernetes import config as kube_config
    from kubernetes.client import ApiClient, Configuration
    from kubernetes.config.config_exception import ConfigException

    try:
        configuration = Configuration()
        kube_config.load_kube_config(
            config_file=str(target.kubeconfig) if target.kubeconfig else None,
            context=target.context,
            client_configuration=configuration,
        )
    except (ConfigException, OSError) as exc:
        raise ContextError(f"cannot load kube context {target.context!r}: {exc}") from exc
    return ApiClient(configuration)


@contextmanager
def api_errors(
    what: str, *, name: str | None = None, namespace: str | None = None
) -> Iterator[None]:
    """Translate kubernetes client errors into ours, naming the object and namespace.

    ``what`` is the object's kind ("Deployment", "pod", "namespace").
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    label = f"{what} {name!r}" if name else what
    where = f" in namespace {namespace!r}" if namespace else ""
    try:
        yield
    except ApiException as exc:
        if exc.status == 404:
            raise NotFound(f"{label} not found{where}", namespace=namespace, name=name) from exc
        if exc.status in (401, 403):
            raise ClusterError(
                f"not allowed to access {label}{where} (HTTP {exc.status}: {exc.reason})",
                hint="Check that your kube context's user has the needed RBAC permissions.",
                namespace=namespace,
            ) from exc
        raise ClusterError(
            f"Kubernetes API error on {label}{where}: HTTP {exc.status} {exc.reason}",
            namespace=namespace,
        ) from exc
    except (HTTPError, OSError) as exc:
        raise ClusterError(
            f"cannot reach the Kubernetes API: {_short_reason(exc)}",
            hint="Check that the cluster is running and the kube context points at it.",
        ) from exc


def _short_reason(exc: BaseException) -> str:
    """The innermost reason of a urllib3 error chain, not its whole repr."""
    reason = getattr(exc, "reason", None)
    while isinstance(reason, BaseException) and getattr(reason, "reason", None) is not None:
        reason = getattr(reason, "reason", None)
    text = str(reason or exc)
    # urllib3 prefixes "<HTTPSConnection(host=..., port=...)>: "; keep the part a human reads.
    return text.split(">: ", 1)[-1] if ">: " in text else text
