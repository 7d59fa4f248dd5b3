"""A FAKE HTTP(S) server for the error matrix: answers every request with one chosen status.

Why a fake: a real Kubernetes API server, Docker engine or registry cannot be made to answer
an ordinary read with 409 or 500 on demand, nor to accept a connection and then never
answer. This one does only that: every request gets ``status`` with a Kubernetes-style
``Status`` JSON body (``silent=True``: the connection is accepted and left unanswered), over
plain HTTP or over TLS with a certificate no client here trusts (the "wrong CA" case).
Everything a real peer can do is tested against the real one (tests/integration, tests/e2e).
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists"}


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 500

    def _answer(self) -> None:
        reason = REASONS.get(self.status, "InternalError")
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"fake answer {self.status}",
                "reason": reason,
                "code": self.status,
            }
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # What a Docker registry sends with every answer (the suite looks for it over http).
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        if self.status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="fake"')
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def fake_http(status: int, *, tls_dir: Path | None = None) -> Iterator[int]:
    """Serve ``status`` for every request on 127.0.0.1; yields the port.

    ``tls_dir``: serve TLS with a fresh self-signed certificate made there (trusted by no one).
    """
    handler = type("Handler", (_Handler,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls_dir is not None:
        cert, key = self_signed(tls_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never sends a byte; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        # Joined before the socket is closed, whatever it takes (0.2 s at most): a thread still
        # in accept() on a closed descriptor's number may accept the next socket given it.
        thread.join()
        for conn in accepted:
            conn.close()
        sock.close()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (openssl), trusted by no one."""
    cert, key = directory / "fake.crt", directory / "fake.key"
    if not cert.exists():
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return cert, key
