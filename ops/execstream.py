"""Run a command in a pod like ``subprocess.run``, streaming bytes through the exec API.

The handshake (URL, auth, TLS, proxy) is the official client's ``kubernetes.stream``; the
data path is ours: frames are read straight from its websocket (``resp.sock``) and written
to file objects in chunks of a few hundred KiB. The client's own read loop
(``WSClient.update()``) appends every waiting frame to one growing buffer, which makes large
streams quadratic in time and linear in memory (``bench/execstream_bench.py`` measures both).

Channel protocol (``v4``/``v5.channel.k8s.io``): every binary frame starts with a channel
byte: 0 stdin, 1 stdout, 2 stderr, 3 the exit status (a JSON ``Status``), 255 (v5 only) a
client's "close this channel" signal. Without v5 a client cannot end the remote stdin, so a
command that reads stdin is always size-delimited on the remote side (``head -c N``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Protocol

from ops.errors import ClusterError, ExecFailed, NotFound
from ops.kube import KubeTarget, api_client

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

CHUNK_SIZE = 256 * 1024
STDERR_TAIL_BYTES = 8 * 1024
CAPTURE_LIMIT = 4 * 1024 * 1024
V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
_STDIN, _STDOUT, _STDERR, _STATUS, _CLOSE = 0, 1, 2, 3, 255

Progress = Callable[[int], None]


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """What a finished command left: its exit code, stderr tail and the bytes moved."""

    exit_code: int
    stderr_tail: str
    stdout_bytes: int
    stdin_bytes: int
    stdout: bytes = b""  # only when no stdout file was given (bounded by CAPTURE_LIMIT)


class CommandRunner(Protocol):
    """Something that runs an argument list somewhere and streams its stdin/stdout.

    ``ops.backups`` takes any runner, so the same dump/verify/restore code runs on a local
    subprocess (tests, local tools) and in a pod (``PodExec``).
    """

    @property
    def where(self) -> str: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdin_size: int | None = None,
        stdout: IO[bytes] | None = None,
        check: bool = True,
        progress: Progress | None = None,
    ) -> ExecResult: ...


class StderrTail:
    """The last ``limit`` bytes of a stream, for error messages."""

    def __init__(self, limit: int = STDERR_TAIL_BYTES) -> None:
        self._limit = limit
        self._data = bytearray()

    def add(self, data: bytes | memoryview) -> None:
        self._data += data
        if len(self._data) > self._limit:
            del self._data[: len(self._data) - self._limit]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace").strip()


class _Capture:
    """A bounded in-memory stdout for small commands (listing, checksums)."""

    def __init__(self, limit: int = CAPTURE_LIMIT) -> None:
        self.limit = limit
        self.data = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if len(self.data) + len(data) > self.limit:
            raise ExecFailed(
                f"command printed more than {self.limit} bytes; give it a stdout file",
                hint="This is a bug in the caller: large output must stream to a file.",
            )
        self.data += data
        return len(data)


# If the command stops reading early (it failed), `cat` drains the rest: the API server
# sends no exit status while stdin is still arriving (kubectl then hangs until its I/O
# timeout and loses the status), so the stdin must always be read to its end.
_DRAIN = '{ "$@"; status=$?; cat >/dev/null; exit $status; }'


def sized_stdin(argv: Sequence[str], size: int | None) -> list[str]:
    """Wrap ``argv`` so that it reads exactly ``size`` bytes of stdin, then sees EOF.

    This is what lets stdin end under ``v4.channel.k8s.io``, which has no close signal.
    Whatever the command reads, all of stdin is consumed; the status is the command's own.
    """
    if size is None:
        return ["sh", "-c", _DRAIN, "drained-stdin", *argv]
    script = f'n="$1"; shift; head -c "$n" | {_DRAIN}'
    return ["sh", "-c", script, "sized-stdin", str(size), *argv]


def exit_code_from_status(raw: bytes) -> tuple[int | None, str]:
    """Exit code and message from the error channel's ``Status`` (None: no exit code)."""
    try:
        status = json.loads(raw.decode("utf-8", errors="replace"))
    except ValueError:
        return None, f"unreadable exit status {raw[:200]!r}"
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message") or status.get("reason") or "failed")
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message")), message
                except (TypeError, ValueError):
                    break
    return None, message


# API server URL -> the exec protocol it chose, learned once per process.
_PROTOCOLS: dict[str, str] = {}


class PodExec:
    """Runs commands in one pod's container over the exec API (a fresh client per stream)."""

    def __init__(
        self,
        target: KubeTarget,
        pod: str,
        *,
        container: str | None = None,
        client_factory: Callable[[KubeTarget], ApiClient] = api_client,
        keepalive_seconds: float = 20.0,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.target = target
        self.pod = pod
        self.container = container
        self._client_factory = client_factory
        self.keepalive_seconds = keepalive_seconds
        self.chunk_size = chunk_size

    @property
    def where(self) -> str:
        return f"pod {self.pod} ({self.target.context}/{self.target.namespace})"

    def protocol(self) -> str:
        """The exec protocol of this API server: the one an earlier exec in this process
        was answered with, else learned with one empty command.

        Under v5 stdin goes straight into the command and ends with the close signal; only
        under v4 does it pass the ``head -c N`` wrapper, an extra pipe in the pod that costs
        CPU beside the command it feeds (seconds per GB on a busy node).
        """
        host = str(self._client_factory(self.target).configuration.host)
        if host not in _PROTOCOLS:
            self.run(["sh", "-c", "exit 0"], check=False)
        return _PROTOCOLS[host]

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: IO[bytes] | None = None,
        stdin_size: int | None = None,
        stdout: IO[bytes] | None = None,
        check: bool = True,
        progress: Progress | None = None,
    ) -> ExecResult:
        """Run ``argv``; stream ``stdin`` in and stdout out; raise ExecFailed if ``check``.

        Any exit (Ctrl-C included) closes the websocket, which ends the remote command's
        stdin and stdout: a remote ``pg_dump`` dies of SIGPIPE, a reader sees EOF.
        """
        expected = None
        if stdin is not None:
            expected = self.protocol()
            argv = sized_stdin(argv, None if expected == V5 else stdin_size)
        ws, protocol = self._connect(list(argv), with_stdin=stdin is not None)
        if stdin is not None and protocol != V5:
            # Closing ends the command at once: its stdin sees EOF before any input.
            if stdin_size is None:
                ws.close()
                raise ExecFailed(
                    f"the API server speaks {protocol or 'an old exec protocol'}, which cannot "
                    "end stdin; the size of the input is needed",
                    hint="Upgrade the cluster to Kubernetes 1.30 or later, or pass the size.",
                )
            if protocol != expected:  # the command was started without its head -c wrapper
                ws.close()
                raise ExecFailed(
                    f"the API server spoke {expected} a moment ago and now speaks {protocol}",
                    hint="Run it again; nothing was sent.",
                )
        sink = stdout if stdout is not None else _Capture()
        session = _Session(
            ws, protocol=protocol, chunk_size=self.chunk_size, keepalive=self.keepalive_seconds
        )
        try:
            status_raw, stdout_bytes, stdin_bytes = session.pump(stdin, sink, progress)
        finally:
            session.close()
        return self._result(
            argv,
            status_raw,
            session.stderr.text(),
            stdout_bytes=stdout_bytes,
            stdin_bytes=stdin_bytes,
            captured=bytes(sink.data) if isinstance(sink, _Capture) else b"",
            check=check,
        )

    def _result(
        self,
        argv: Sequence[str],
        status_raw: bytes | None,
        stderr: str,
        *,
        stdout_bytes: int,
        stdin_bytes: int,
        captured: bytes,
        check: bool,
    ) -> ExecResult:
        program = program_name(argv)
        if status_raw is None:
            raise ExecFailed(
                f"{program} in {self.where}: the connection ended without an exit status"
                + (f"; stderr: {stderr}" if stderr else ""),
                hint="The stream was cut (network, API server or kubelet); nothing was kept. "
                "Run it again.",
                pod=self.pod,
                namespace=self.target.namespace,
            )
        code, message = exit_code_from_status(status_raw)
        if code is None:
            raise ExecFailed(
                f"{program} in {self.where} failed without an exit code: {message}"
                + (f"; stderr: {stderr}" if stderr else ""),
                pod=self.pod,
                namespace=self.target.namespace,
            )
        result = ExecResult(
            exit_code=code,
            stderr_tail=stderr,
            stdout_bytes=stdout_bytes,
            stdin_bytes=stdin_bytes,
            stdout=captured,
        )
        if check and code != 0:
            raise ExecFailed(
                f"{program} in {self.where} exited with {code}" + (f": {stderr}" if stderr else ""),
                pod=self.pod,
                namespace=self.target.namespace,
            )
        return result

    def _connect(self, argv: list[str], *, with_stdin: bool) -> tuple[_WebSocket, str]:
        from kubernetes.client import CoreV1Api
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        client = self._client_factory(self.target)
        extra = {"container": self.container} if self.container else {}
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
            # kubernetes.stream wraps every handshake failure as status 0 with the
            # websocket's "Handshake status 404 Not Found ..." text as the reason.
            reason = str(exc.reason or exc)
            if " 404 " in reason or exc.status == 404:
                raise NotFound(
                    f"pod {self.pod!r} not found in namespace {self.target.namespace!r}",
                    namespace=self.target.namespace,
                    name=self.pod,
                ) from exc
            if " 403 " in reason or " 401 " in reason:
                raise ClusterError(
                    f"not allowed to exec into pod {self.pod!r}",
                    hint="The kube context's user needs the pods/exec permission.",
                ) from exc
            first = reason.split(" -+-+- ")[0]
            raise ClusterError(
                f"cannot exec into {self.where}: {first}",
                hint="Check that the pod is running (`kubectl get pod`) and the API reachable.",
            ) from exc
        ws: _WebSocket = response.sock
        protocol = str(getattr(response, "subprotocol", None) or "")
        _PROTOCOLS[str(client.configuration.host)] = protocol
        return ws, protocol


class _WebSocket(Protocol):
    """The part of websocket-client's ``WebSocket`` the session uses."""

    connected: bool
    sock: socket.socket
    lock: threading.Lock

    def send(self, payload: bytes, opcode: int = ...) -> int: ...
    def ping(self, payload: bytes = ...) -> None: ...
    def pong(self, payload: bytes) -> None: ...
    def send_close(self) -> None: ...
    def settimeout(self, timeout: float | None) -> None: ...
    def abort(self) -> None: ...
    def close(self, status: int = ..., reason: bytes = ..., timeout: float = ...) -> None: ...
    def shutdown(self) -> None: ...


class _FrameReader:
    """Server frames read straight off the socket, as many per read as arrived.

    websocket-client's ``recv_data_frame`` makes four small reads per frame (the API server
    sends 4 KiB frames: ~25,000 frames per 100 MB); here one read takes a whole TLS record
    or more. Server frames are never masked (RFC 6455 5.1).

    Reads take ``lock``, the lock every send takes: OpenSSL forbids SSL_read and SSL_write
    on one connection at once (Python 3.11's ssl does not serialise them), and doing both
    from two threads corrupts the TLS state. The wait for data happens outside the lock.
    """

    def __init__(
        self,
        sock: socket.socket,
        lock: threading.Lock,
        *,
        timeout: float,
        read_size: int = 64 * 1024,
    ) -> None:
        self.sock = sock
        self.lock = lock
        self.timeout = timeout
        # One reused buffer: recv(n) allocates n bytes per call, and above 128 KiB each of
        # those is an mmap/munmap pair; a read returns at most one TLS record (16 KiB).
        self._scratch = memoryview(bytearray(read_size))
        self.buf = bytearray()
        self.pos = 0

    def _readable(self, wait: float) -> bool:
        pending = getattr(self.sock, "pending", None)  # bytes OpenSSL already decrypted
        if pending is not None and pending():
            return True
        return bool(select.select([self.sock], [], [], wait)[0])

    def _recv(self) -> memoryview:
        deadline = time.monotonic() + self.timeout
        while True:
            with self.lock:
                if self._readable(0):
                    return self._scratch[: self.sock.recv_into(self._scratch)]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no data")
            self._readable(min(remaining, 1.0))

    def _need(self, n: int) -> None:
        if len(self.buf) - self.pos >= n:
            return
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        while len(self.buf) < n:
            data = self._recv()
            if not data:
                raise ConnectionError("the API server closed the connection")
            self.buf += data

    def next(self) -> tuple[int, bool, bytearray]:
        """(opcode, fin, payload) of the next frame."""
        self._need(2)
        first, second = self.buf[self.pos], self.buf[self.pos + 1]
        length, head = second & 0x7F, 2
        if length == 126:
            self._need(4)
            length, head = int.from_bytes(self.buf[self.pos + 2 : self.pos + 4], "big"), 4
        elif length == 127:
            self._need(10)
            length, head = int.from_bytes(self.buf[self.pos + 2 : self.pos + 10], "big"), 10
        if second & 0x80:
            raise ConnectionError("the server sent a masked frame (protocol error)")
        self._need(head + length)
        start = self.pos + head
        payload = self.buf[start : start + length]
        self.pos = start + length
        return first & 0x0F, bool(first & 0x80), payload


class _Session:
    """One exec stream: a reader (this thread), a stdin feeder and a keep-alive pinger."""

    def __init__(self, ws: _WebSocket, *, protocol: str, chunk_size: int, keepalive: float) -> None:
        self.ws = ws
        self.protocol = protocol
        self.chunk_size = chunk_size
        self.keepalive = keepalive
        self.stderr = StderrTail()
        self._stop = threading.Event()
        self._feeder_error: BaseException | None = None
        self._stdin_bytes = 0
        self._threads: list[threading.Thread] = []

    def pump(
        self, stdin: IO[bytes] | None, stdout: IO[bytes] | _Capture, progress: Progress | None
    ) -> tuple[bytes | None, int, int]:
        from websocket import ABNF, WebSocketConnectionClosedException

        # Pongs answer our pings, so a connection silent for 3 keep-alive periods is dead.
        self.ws.settimeout(self.keepalive * 3)
        self._start(self._ping_loop)
        if stdin is not None:
            self._start(lambda: self._feed(stdin, progress))
        status: bytearray | None = None
        out_bytes = 0
        reader = _FrameReader(self.ws.sock, self.ws.lock, timeout=self.keepalive * 3)
        channel = -1
        # The API server sends stdout in frames of a few KiB; gathering them into chunks
        # makes one write, one hash update and one progress step per chunk, not per frame.
        pending = bytearray()

        def flush() -> None:
            if pending:
                stdout.write(pending)
                if progress is not None and stdin is None:
                    progress(len(pending))
                pending.clear()

        while True:
            try:
                opcode, _fin, data = reader.next()
            except TimeoutError as exc:
                raise ExecFailed(
                    f"no answer from the API server for {self.keepalive * 3:.0f} s",
                    hint="The connection looks dead; nothing was kept. Run it again.",
                ) from exc
            except (WebSocketConnectionClosedException, ConnectionError, OSError):
                break
            if opcode == ABNF.OPCODE_CLOSE:
                with contextlib.suppress(Exception):
                    self.ws.send_close()
                break
            if opcode == ABNF.OPCODE_PING:
                with contextlib.suppress(Exception):
                    self.ws.pong(bytes(data))
                continue
            if opcode == ABNF.OPCODE_CONT:
                payload = memoryview(data)  # a fragment continues the last channel
            elif opcode in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT):
                if len(data) < 2:
                    continue  # the server's empty "channel open" frames
                channel, payload = data[0], memoryview(data)[1:]
            else:
                continue  # pongs: they only keep the read timeout from firing
            if channel == _STDOUT:
                pending += payload
                out_bytes += len(payload)
                if len(pending) >= self.chunk_size:
                    flush()
            elif channel == _STDERR:
                self.stderr.add(payload)
            elif channel == _STATUS:
                status = (status or bytearray()) + payload
        self._end_threads()
        flush()
        if self._feeder_error is not None:
            raise self._feeder_error
        return (bytes(status) if status is not None else None), out_bytes, self._stdin_bytes

    def _end_threads(self) -> None:
        """Stop the feeder and pinger. A feeder blocked sending stdin the remote command no
        longer reads (it exited, or we are interrupted) holds the send lock: cut the socket
        under it, or closing would wait for that lock forever."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=0.5)
        if any(t.is_alive() for t in self._threads):
            self.ws.abort()
            for thread in self._threads:
                thread.join(timeout=5)

    def close(self) -> None:
        self._end_threads()
        try:
            self.ws.close(timeout=1)
        except Exception:  # closing a broken socket: nothing left to do
            self.ws.shutdown()

    def _start(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _feed(self, stdin: IO[bytes], progress: Progress | None) -> None:
        from websocket import ABNF, WebSocketConnectionClosedException

        prefix = bytes([_STDIN])
        try:
            while not self._stop.is_set():
                try:
                    chunk = stdin.read(self.chunk_size)
                except BaseException as exc:  # a local read error: end the stream, report it
                    self._feeder_error = exc
                    self.ws.abort()
                    return
                if not chunk:
                    break
                header, masked = masked_frame(prefix + chunk)
                with self.ws.lock:  # websocket-client's send lock: pings and close wait
                    self.ws.sock.sendall(header)
                    self.ws.sock.sendall(masked)
                self._stdin_bytes += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            if self.protocol == V5 and not self._stop.is_set():
                self.ws.send(bytes([_CLOSE, _STDIN]), ABNF.OPCODE_BINARY)
        except TimeoutError as exc:  # the API server took nothing for 3 keep-alive periods
            self._feeder_error = ExecFailed(
                "the API server stopped taking input", hint="Run it again; nothing was kept."
            )
            self._feeder_error.__cause__ = exc
            self.ws.abort()
        except (WebSocketConnectionClosedException, OSError):
            pass  # the remote side ended first; its exit status tells what happened

    def _ping_loop(self) -> None:
        while not self._stop.wait(self.keepalive):
            try:
                self.ws.ping(b"manifest")
            except Exception:
                return


@functools.cache
def _xor_tables() -> tuple[bytes, ...]:
    return tuple(bytes(b ^ k for b in range(256)) for k in range(256))


def _translate_mask(payload: bytes, key: bytes) -> bytes | bytearray:
    """XOR with ``key`` as four strided ``bytes.translate`` calls (one per key byte)."""
    tables = _xor_tables()
    masked = bytearray(len(payload))
    for i in range(4):
        masked[i::4] = payload[i::4].translate(tables[key[i]])
    return masked


def _mask_function() -> Callable[[bytes, bytes], bytes | bytearray]:
    # The `websockets` package's C helper XORs at memory speed (~40 GB/s here, SSE2).
    # websocket-client masks in pure Python (~240 MB/s of one core) and our translate
    # fallback does ~900 MB/s: at 1 GB that is a second of CPU taken from the API server,
    # kubelet and pg_restore on the same machine. The fallback serves platforms without
    # a wheel of `websockets`.
    try:
        from websockets.speedups import apply_mask
    except ImportError:
        return _translate_mask
    return apply_mask


_apply_mask = _mask_function()


def masked_frame(payload: bytes) -> tuple[bytes, bytes | bytearray]:
    """A client's binary frame (RFC 6455 5.3): header with a fresh random 4-byte key, and
    the masked payload."""
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes([0x82, 0x80 | length])
    elif length < 65536:
        header = bytes([0x82, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x82, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + key, _apply_mask(payload, key)


def program_name(argv: Sequence[str]) -> str:
    """A short name for messages: the program a ``sh -c`` wrapper runs, else argv[0]."""
    for word in argv:
        if word.startswith(("pg_", "psql", "sha256sum")):
            return word
    for word in argv:
        for candidate in ("pg_dump", "pg_restore", "psql", "backup.sh", "sha256sum"):
            if candidate in word:
                return candidate
    return argv[0] if argv else "command"
