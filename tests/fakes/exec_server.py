"""FakeExecServer: a local stand-in for the Kubernetes API's pod exec endpoint.

A fake, because the exec layer must be tested (and benchmarked) on machines without a
cluster. It speaks the real wire protocol — a websocket upgrade on
``/api/v1/namespaces/NS/pods/POD/exec?command=...``, ``v5``/``v4.channel.k8s.io``, channel
bytes 0-3 and 255, a JSON ``Status`` on channel 3 — and runs the command as a real local
process. It can also misbehave on purpose: cut the connection after N bytes of stdout, or
finish without an exit status. The real proof is ``tests/e2e/test_backup_e2e.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import socketserver
import struct
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import parse_qs, urlparse

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class FakeBehaviour:
    protocols: Sequence[str] = (V5, V4)
    pods: set[str] | None = None  # None: every pod name exists
    env: Mapping[str, str] | None = None
    drop_after_stdout_bytes: int | None = None  # cut the TCP connection mid-stream
    omit_status: bool = False  # end the stream without the channel-3 status
    frame_size: int = 256 * 1024
    commands: list[list[str]] = field(default_factory=list)


def _frame(opcode: int, payload: bytes) -> bytes:
    first = 0x80 | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        behaviour = self.server.behaviour
        request_line = self.rfile.readline().decode("latin-1").strip()
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline().decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        url = urlparse(request_line.split(" ")[1])
        parts = url.path.strip("/").split("/")
        pod = parts[5] if len(parts) > 6 else ""
        if behaviour.pods is not None and pod not in behaviour.pods:
            body = json.dumps(
                {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                    "message": f'pods "{pod}" not found',
                }
            ).encode()
            self.wfile.write(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            return
        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")]
        protocol = next((p for p in behaviour.protocols if p in offered), None)
        if protocol is None:
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        accept = base64.b64encode(
            hashlib.sha1((headers["sec-websocket-key"] + _GUID).encode()).digest()
        ).decode()
        self.wfile.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
            ).encode()
        )
        query = parse_qs(url.query)
        command = query["command"]
        behaviour.commands.append(command)
        with_stdin = query.get("stdin", ["false"])[0].lower() == "true"
        _Session(self.connection, self.rfile, behaviour, protocol, command, with_stdin).run()


class _Session:
    def __init__(
        self,
        sock: socket.socket,
        rfile: IO[bytes],
        behaviour: FakeBehaviour,
        protocol: str,
        command: list[str],
        with_stdin: bool,
    ) -> None:
        self.sock, self.rfile, self.behaviour = sock, rfile, behaviour
        self.protocol, self.command, self.with_stdin = protocol, command, with_stdin
        self.lock = threading.Lock()
        self.dropped = False

    def send(self, channel: int, payload: bytes, opcode: int = 0x2) -> None:
        with self.lock:
            if not self.dropped:
                self.sock.sendall(_frame(opcode, bytes([channel]) + payload))

    def run(self) -> None:
        env = {**os.environ, **(self.behaviour.env or {})}
        try:
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE if self.with_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            self.status({"status": "Failure", "reason": "InternalError", "message": str(exc)})
            self.close()
            return
        try:
            self.serve(proc)
        finally:
            # Like the kubelet: when the stream is gone, so is the command's stdin.
            self._close_stdin(proc)

    def serve(self, proc: subprocess.Popen[bytes]) -> None:
        reader = threading.Thread(target=self.read_client, args=(proc,), daemon=True)
        reader.start()
        for channel in (1, 2, 3):
            self.send(channel, b"")  # like the API server: an empty frame per channel
        stderr = threading.Thread(target=self.pump_stderr, args=(proc,), daemon=True)
        stderr.start()
        sent = 0
        assert proc.stdout is not None
        limit = self.behaviour.drop_after_stdout_bytes
        while True:
            chunk = proc.stdout.read1(self.behaviour.frame_size)  # type: ignore[attr-defined]
            if not chunk:
                break
            if limit is not None and sent + len(chunk) >= limit:
                self.send(1, chunk[: limit - sent])
                self.drop()
                proc.stdout.close()
                proc.kill()
                proc.wait()
                return
            try:
                self.send(1, chunk)
            except OSError:
                # Like the kubelet when the client is gone: the command's stdout closes
                # (a writer dies of SIGPIPE).
                proc.stdout.close()
                proc.wait()
                return
            sent += len(chunk)
        stderr.join()
        code = proc.wait()
        if not self.behaviour.omit_status:
            if code == 0:
                self.status({"metadata": {}, "status": "Success"})
            else:
                self.status(
                    {
                        "metadata": {},
                        "status": "Failure",
                        "message": f"command terminated with non-zero exit code: {code}",
                        "reason": "NonZeroExitCode",
                        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                    }
                )
        self.close()

    def status(self, status: dict[str, Any]) -> None:
        self.send(3, json.dumps(status).encode())

    def close(self) -> None:
        with self.lock:
            if not self.dropped:
                self.sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
                self.dropped = True
        self.sock.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self.lock:
            self.dropped = True
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # shutdown first: the handler's file objects keep the descriptor open past close().
            self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()

    def pump_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with suppress(OSError):
            while chunk := proc.stderr.read1(65536):  # type: ignore[attr-defined]
                self.send(2, chunk)

    def read_client(self, proc: subprocess.Popen[bytes]) -> None:
        from websocket._abnf import ABNF

        try:
            while True:
                head = self._exact(2)
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    length = struct.unpack("!H", self._exact(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", self._exact(8))[0]
                mask = self._exact(4) if head[1] & 0x80 else b""
                payload = self._exact(length)
                if mask:
                    payload = ABNF.mask(mask, payload)
                if opcode == 0x8:
                    break
                if opcode == 0x9:
                    with self.lock:
                        if not self.dropped:
                            self.sock.sendall(_frame(0xA, payload))
                    continue
                if opcode != 0x2 or not payload:
                    continue
                if payload[0] == 0 and proc.stdin is not None:
                    try:
                        proc.stdin.write(payload[1:])
                        proc.stdin.flush()
                    except OSError:
                        pass
                elif payload[0] == 255 and self.protocol == V5 and payload[1:2] == b"\x00":
                    self._close_stdin(proc)
        except (OSError, EOFError, ValueError):
            pass
        # Like the kubelet: when the client goes away, the command's stdin ends.
        self._close_stdin(proc)

    def _close_stdin(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdin is not None and not proc.stdin.closed:
            with suppress(OSError):
                proc.stdin.close()

    def _exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise EOFError
        return data


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    behaviour: FakeBehaviour


@dataclass
class FakeExecServer:
    """A running fake exec endpoint on 127.0.0.1; ``client_factory`` plugs it into PodExec."""

    server: _Server
    behaviour: FakeBehaviour

    @property
    def host(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def client_factory(self, _target: object) -> Any:
        from kubernetes.client import ApiClient, Configuration

        configuration = Configuration(host=self.host)
        return ApiClient(configuration)


@contextmanager
def fake_exec_server(**behaviour: Any) -> Iterator[FakeExecServer]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.behaviour = FakeBehaviour(**behaviour)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeExecServer(server=server, behaviour=server.behaviour)
    finally:
        server.shutdown()
        server.server_close()


def main() -> None:
    """``python -m tests.fakes.exec_server``: serve until killed; print the URL (benchmarks)."""
    import sys
    import time

    with fake_exec_server() as server:
        print(server.host, flush=True)
        with suppress(KeyboardInterrupt):
            while sys.stdin.readline():
                time.sleep(0.1)


if __name__ == "__main__":
    main()
