"""``PodExec``: run a command in a pod's container like ``subprocess.run``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from ops import kube
from ops.errors import ClusterError, ExecFailed, NotFound
from ops.execstream.channels import (
    V4,
    V5,
    exit_code_from_status,
    stdin_first_line,
    stdin_wrapped,
)
from ops.execstream.runner import (
    CHUNK_SIZE,
    CommandRunner,
    CompletedExec,
    Describe,
    ExecRequest,
    command_name,
    exit_error,
)
from ops.execstream.session import ExecSession, Pumped, WebSocket
from ops.kube import CONNECT_TIMEOUT, READ_TIMEOUT, KubeTarget, unreachable

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from ops.kubeconfig import ExecDoor


class PodExec(CommandRunner):
    """Runs commands in one pod's container over the exec API.

    Each command opens its own websocket with a fresh API client, closed once the
    handshake is done. The exec protocol the API server chose in that handshake decides how
    stdin ends (see ``channels.stdin_wrapped``).
    """

    def __init__(
        self,
        target: KubeTarget,
        pod: str,
        *,
        container: str | None = None,
        client_factory: Callable[[KubeTarget], AbstractContextManager[ApiClient]] = kube.client,
        keepalive_seconds: float = 20.0,
        chunk_size: int = CHUNK_SIZE,
        describe: Describe = command_name,
        on_refused: Callable[[], None] | None = None,
    ) -> None:
        """``on_refused``: called when the API server refuses an exec (not a 404, 401 or
        403) or ends it without an exit code, to raise an error that says why (e.g. the pod
        is not running); if it returns, the error is the exec's own."""
        self.target = target
        self._on_refused = on_refused
        self.pod = pod
        self.container = container
        self._client_factory = client_factory
        self.keepalive_seconds = keepalive_seconds
        self.chunk_size = chunk_size
        self._describe = describe

    @property
    def where(self) -> str:
        return f"pod {self.pod} ({self.target.context}/{self.target.namespace})"

    def _execute(self, request: ExecRequest) -> CompletedExec:
        """Any exit (Ctrl-C included) closes the websocket, which ends the remote command's
        stdin and stdout: a remote ``pg_dump`` dies of SIGPIPE, a reader sees EOF."""
        args, stdin, stdin_size = request.args, request.stdin, request.stdin_size
        ws, protocol = self._connect(
            stdin_wrapped(args) if stdin is not None else args, with_stdin=stdin is not None
        )
        lead = b""
        if stdin is not None:
            first = stdin_first_line(protocol, stdin_size)
            if first is None:
                ws.close()  # the wrapper reads no first line: the command never runs
                raise ExecFailed(
                    f"the API server speaks {protocol or 'an old exec protocol'}, which cannot "
                    "end stdin; the size of the input is needed",
                    hint="Upgrade the cluster to Kubernetes 1.30 or later, or pass the size.",
                )
            lead = first
        session = ExecSession(
            ws,
            protocol=protocol,
            chunk_size=self.chunk_size,
            keepalive=self.keepalive_seconds,
            stdin_size=stdin_size if stdin is not None else None,
        )
        try:
            pumped = session.pump(stdin, request.sink, request.progress, stdin_lead=lead)
        finally:
            session.close()
        return self._result(args, pumped, session.stderr.text(), captured=request.captured())

    def _exit_error(self, result: CompletedExec) -> ExecFailed:
        return exit_error(
            result,
            name=self._describe(result.args),
            where=f"in {self.where}",
            pod=self.pod,
            namespace=self.target.namespace,
        )

    def _result(
        self, args: list[str], pumped: Pumped, stderr: str, *, captured: bytes
    ) -> CompletedExec:
        name = self._describe(args)
        if pumped.status is None:
            raise ExecFailed(
                f"{name} in {self.where}: the connection ended without an exit status"
                + (f"; stderr: {stderr}" if stderr else ""),
                hint="The stream was cut (network, API server or kubelet); nothing was kept. "
                "Run it again.",
                pod=self.pod,
                namespace=self.target.namespace,
            )
        code, message = exit_code_from_status(pumped.status)
        if code is None:
            # e.g. "unable to upgrade connection: container not found": the pod is not
            # running (nothing was looked up before: say why if we can).
            if self._on_refused is not None:
                self._on_refused()
            raise ExecFailed(
                f"{name} in {self.where} failed without an exit code: {message}"
                + (f"; stderr: {stderr}" if stderr else ""),
                pod=self.pod,
                namespace=self.target.namespace,
            )
        return CompletedExec(
            args=args,
            returncode=code,
            stdout=captured,
            stderr=stderr,
            stdout_bytes=pumped.stdout_bytes,
            stdin_bytes=pumped.stdin_bytes,
        )

    def _connect(self, argv: list[str], *, with_stdin: bool) -> tuple[WebSocket, str]:
        if self._client_factory is kube.client:
            from ops.kubeconfig import exec_door

            door = exec_door(self.target.kubeconfig, self.target.context)
            if door is not None:
                return self._connect_direct(door, argv, with_stdin=with_stdin)
        from kubernetes.client import CoreV1Api
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        extra = {"container": self.container} if self.container else {}
        # The client is closed once the handshake is done: the websocket is its own
        # connection; the client's pool is not.
        with self._client_factory(self.target) as client:
            try:
                response = stream(
                    CoreV1Api(client).connect_get_namespaced_pod_exec,
                    self.pod,
                    self.target.namespace,
                    command=argv,
                    stdin=with_stdin,
                    stdout=True,
                    stderr=True,
                    tty=False,
                    _preload_content=False,
                    binary=True,
                    **extra,
                )
            except ApiException as exc:
                raise self._handshake_error(exc, host=str(client.configuration.host)) from exc
        ws: WebSocket = response.sock
        return ws, str(getattr(response, "subprotocol", None) or "")

    def _connect_direct(
        self, door: ExecDoor, argv: list[str], *, with_stdin: bool
    ) -> tuple[WebSocket, str]:
        """The exec websocket opened by websocket-client itself, as ``kubernetes.stream``
        opens it (same URL, subprotocols and TLS), without importing the kubernetes
        package (see ``ops.kubeconfig``)."""
        from websocket import WebSocket as Client
        from websocket import WebSocketBadStatusException, WebSocketException

        query = [("command", word) for word in argv]
        query += [("stdin", str(with_stdin).lower()), ("stdout", "true"), ("stderr", "true")]
        query += [("tty", "false")] + ([("container", self.container)] if self.container else [])
        path = f"/api/v1/namespaces/{quote(self.target.namespace, safe='')}/pods/"
        path += f"{quote(self.pod, safe='')}/exec?{urlencode(query)}"
        sslopt: dict[str, object] = {"context": door.ssl_context}
        if door.server_hostname:
            sslopt["server_hostname"] = door.server_hostname
        ws = Client(sslopt=sslopt, skip_utf8_validation=False)
        try:
            ws.connect(  # type: ignore[no-untyped-call]
                door.base_url + path,
                header=[*door.headers, f"sec-websocket-protocol: {V5},{V4}"],
                timeout=CONNECT_TIMEOUT + READ_TIMEOUT,
            )
        except WebSocketBadStatusException as exc:
            raise self._handshake_error(exc, host=door.host) from exc
        except (OSError, WebSocketException) as exc:
            raise unreachable(exc, door.host) from exc
        headers = ws.getheaders() or {}
        protocol = str(ws.getsubprotocol() or headers.get("sec-websocket-protocol") or "")
        return ws, protocol  # type: ignore[return-value]

    def _handshake_error(self, exc: Exception, *, host: str) -> ClusterError:
        # kubernetes.stream wraps every handshake failure as status 0 with the websocket's
        # "Handshake status 404 Not Found ..." text as the reason, and a failure to connect
        # (refused, timed out, TLS) as status 0 with the socket's error as the reason.
        reason = str(getattr(exc, "reason", None) or exc)
        if "Handshake status" not in reason:
            return unreachable(exc, host)
        if " 404 " in reason or getattr(exc, "status", None) == 404:
            return NotFound(
                f"pod {self.pod!r} not found in namespace {self.target.namespace!r}",
                namespace=self.target.namespace,
                name=self.pod,
            )
        for status in (401, 403):
            if f" {status} " in reason:
                return ClusterError(
                    f"the Kubernetes API refused to exec into pod {self.pod!r} in namespace "
                    f"{self.target.namespace!r} (HTTP {status})",
                    hint="Your kube context's credentials expired or were refused: log in again."
                    if status == 401
                    else "The kube context's user needs the pods/exec permission.",
                    namespace=self.target.namespace,
                )
        if self._on_refused is not None:
            try:
                self._on_refused()
            except ClusterError as explained:
                return explained
        first = reason.split(" -+-+- ")[0]
        return ClusterError(
            f"cannot exec into {self.where}: {first}",
            hint="Check that the pod is running (`kubectl get pod`) and the API reachable.",
        )
