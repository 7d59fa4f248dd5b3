"""The one door to the Kubernetes API: context choice, clients, and error translation.

The kubernetes package is imported inside these functions: importing it is slow, and
``inv --list`` must not pay for it (``bench/startup_bench.py`` measures what it costs).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.config import Settings
from ops.errors import ClusterError, ContextError, NotFound, OpsError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

# Every API call waits at most this long to connect and then for each answer, unless the
# call names its own limit: a silent API server is one error line in seconds, not a hang.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# urllib3 retries a failed connection once (an API server restarting); never a read, so a
# server that accepts and never answers costs one READ_TIMEOUT, not four.
CONNECT_RETRIES = 1

DEPLOY_HINT = "Run `inv deploy` (it creates the namespace and applies k8s/), or pick --namespace."
_KINDS = {
    "namespaces": "namespace",
    "pods": "pod",
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "services": "Service",
    "statefulsets": "StatefulSet",
    "events": "events",
}
_VERBS = {"GET": "read", "POST": "create", "PUT": "replace", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True, kw_only=True)
class KubeTarget:
    """Where a task acts: a kubeconfig, a context in it, and a namespace."""

    kubeconfig: Path | None
    context: str
    namespace: str


def list_contexts(kubeconfig: Path | None) -> tuple[list[str], str | None]:
    """Context names in the kubeconfig and its current context (read without the
    kubernetes package: see ``ops.kubeconfig``)."""
    from ops.kubeconfig import load

    config = load(kubeconfig)
    return list(config.contexts), config.current


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


@contextmanager
def client(target: KubeTarget) -> Iterator[ApiClient]:
    """A fresh ApiClient for the target's context (never a shared global one), for one
    operation: closed when the block ends, so no connection pool outlives its work."""
    api = _new_client(target)
    try:
        yield api
    finally:
        api.close()


def _new_client(target: KubeTarget) -> ApiClient:
    from kubernetes import config as kube_config
    from kubernetes.client import Configuration
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
    from urllib3.util.retry import Retry

    configuration.retries = Retry(
        total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=0, status=0, other=0
    )
    client: ApiClient = _guarded_client_class()(configuration)
    return client


@functools.cache
def _guarded_client_class() -> type[Any]:
    """ApiClient with the one error boundary of the kubernetes client and urllib3.

    Every generated API method (``read_namespaced_pod``, ``kubernetes.stream``'s exec
    handshake, ...) goes through ``_call_with_legacy_options``: there, calls get default
    timeouts, and whatever the client or urllib3 raises becomes an error of our tree.
    Status errors stay ``ApiException`` too (see ``_status_error``), so code that looks at
    ``.status`` keeps working.
    """
    from kubernetes.client import ApiClient
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError
    from websocket import WebSocketException

    _time_exec_handshakes()
    if not hasattr(ApiClient, "_call_with_legacy_options"):  # pragma: no cover
        raise ClusterError(
            "this version of the kubernetes package is not supported",
            hint="Install the versions pyproject.toml names: pip install -e .",
        )

    class GuardedApiClient(ApiClient):
        def _call_with_legacy_options(
            self,
            request: Any,
            response_types_map: Any,
            async_req: Any,
            preload_content: bool,
            request_timeout: Any,
            return_http_data_only: bool,
        ) -> Any:
            method, url = str(request[0]), str(request[1])
            if request_timeout is None:
                request_timeout = (CONNECT_TIMEOUT, READ_TIMEOUT)
            try:
                return super()._call_with_legacy_options(
                    request,
                    response_types_map,
                    async_req,
                    preload_content,
                    request_timeout,
                    return_http_data_only,
                )
            except OpsError:
                raise
            except ApiException as exc:
                raise _status_error(exc, method, url) from exc
            except (HTTPError, OSError, WebSocketException) as exc:
                raise unreachable(exc, self.configuration.host) from exc

    return GuardedApiClient


def _time_exec_handshakes() -> None:
    """Give the exec websocket's connect and handshake a timeout.

    kubernetes.stream builds websocket-client's ``WebSocket`` itself and connects it with
    no timeout, so an API server that accepts and never answers would hang an exec (every
    backup task) for ever. Its module's ``WebSocket`` name is replaced, once, by one whose
    ``connect`` has CONNECT_TIMEOUT + READ_TIMEOUT unless given one; the exec session sets
    its own read timeout on the socket right after (ops.execstream.session).
    """
    from kubernetes.stream import ws_client
    from websocket import WebSocket

    module: Any = ws_client
    if getattr(module.WebSocket, "manifest_timed", False):
        return

    class TimedWebSocket(WebSocket):
        manifest_timed = True

        def connect(self, url: str, **options: Any) -> None:
            options.setdefault("timeout", CONNECT_TIMEOUT + READ_TIMEOUT)
            super().connect(url, **options)  # type: ignore[no-untyped-call]

    module.WebSocket = TimedWebSocket


def unreachable(exc: BaseException, host: object) -> ClusterError:
    """A transport failure (refused, timed out, TLS) as one line naming the API server."""
    reason = _short_reason(exc)
    if "certificate verify failed" in reason or "CERTIFICATE_VERIFY_FAILED" in reason:
        return ClusterError(
            f"cannot reach the Kubernetes API at {host}: TLS verification failed ({reason})",
            hint="The kubeconfig's certificate-authority does not match this API server: "
            "get a fresh kubeconfig for it.",
        )
    return ClusterError(
        f"cannot reach the Kubernetes API at {host}: {reason}",
        hint="Check that the cluster is running and the kube context points at it.",
    )


@functools.cache
def _hybrid(base: type[OpsError]) -> type[OpsError]:
    """``base`` that is also an ``ApiException`` (callers may still test ``.status``)."""
    from kubernetes.client.exceptions import ApiException

    return type(base.__name__, (base, ApiException), {"__module__": __name__})


def _status_error(exc: Any, method: str, url: str) -> OpsError:
    """An HTTP status from the API server as our error, naming the object from the answer."""
    status = int(exc.status or 0)
    details: dict[str, Any] = {}
    message = ""
    try:
        body = json.loads(exc.body or "{}")
        details, message = dict(body.get("details") or {}), str(body.get("message") or "")
    except (ValueError, TypeError, AttributeError):
        pass
    found = re.search(r"/namespaces/([^/?]+)(?:/([^/?]+)(?:/([^/?]+))?)?", url)
    namespace = found.group(1) if found else None
    if found and not found.group(2):  # /api/v1/namespaces/NAME: the namespace itself
        details = {"kind": "namespaces", "name": namespace, **details}
    plural = str(details.get("kind") or (found.group(2) if found and found.group(2) else ""))
    kind = _KINDS.get(plural, plural or "object")
    name = str(details.get("name") or (found.group(3) if found and found.group(3) else ""))
    if kind == "namespace":
        namespace = None
    label = f"{kind} {name!r}" if name else kind
    where = f" in namespace {namespace!r}" if namespace else ""
    error: OpsError
    if status == 404:
        error = _hybrid(NotFound)(
            f"{label} not found{where}",
            hint=DEPLOY_HINT,
            namespace=namespace,
            name=name or None,
        )
    elif status in (401, 403):
        error = _hybrid(ClusterError)(
            f"the Kubernetes API refused to {_VERBS.get(method, method)} {label}{where} "
            f"(HTTP {status}: {message or exc.reason})",
            hint="Your kube context's credentials expired or lack the RBAC permission: "
            "log in again, or ask for the permission."
            if status == 401
            else "Your kube context's user lacks the RBAC permission for this.",
            namespace=namespace,
        )
    elif status == 409:
        error = _hybrid(ClusterError)(
            f"conflict on {label}{where} (HTTP 409: {message or exc.reason})",
            hint="Someone else changed it at the same time; run the task again.",
            namespace=namespace,
        )
    elif status == 0:  # kubernetes.stream: the exec handshake failed; reason is its text
        error = _hybrid(ClusterError)(
            f"the Kubernetes API refused the exec handshake: {exc.reason}", namespace=namespace
        )
    else:
        error = _hybrid(ClusterError)(
            f"the Kubernetes API failed on {label}{where} (HTTP {status}: {message or exc.reason})",
            hint="The API server's log may say more; try again.",
            namespace=namespace,
        )
    for attribute in ("status", "reason", "body", "headers", "data"):
        setattr(error, attribute, getattr(exc, attribute, None))
    return error


@contextmanager
def api_errors(
    what: str, *, name: str | None = None, namespace: str | None = None
) -> Iterator[None]:
    """Name the object of client errors raised by an ApiClient that is not ours.

    Clients from ``client`` translate their errors themselves; this is for the rest.
    ``what`` is the object's kind ("Deployment", "pod", "namespace").
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    label = f"{what} {name!r}" if name else what
    where = f" in namespace {namespace!r}" if namespace else ""
    try:
        yield
    except OpsError:
        raise  # already translated at the client's boundary (GuardedApiClient)
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
    for pattern, short in (
        (r"Connection refused", "connection refused"),
        (r"timed out|Read timeout", "timed out"),
        (r"Name or service not known|nodename nor servname|getaddrinfo failed", "unknown host"),
        (r"certificate verify failed: [^(')\]]*", None),
        (r"WRONG_VERSION_NUMBER|wrong version number", "the server does not speak TLS"),
        (r"Connection reset|RemoteDisconnected|closed connection", "the connection was closed"),
    ):
        found = re.search(pattern, text)
        if found:
            return short or found.group(0).strip()
    # urllib3 prefixes "<HTTPSConnection(host=..., port=...)>: "; keep the part a human reads.
    return text.split(">: ", 1)[-1] if ">: " in text else text
