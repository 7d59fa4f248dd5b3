"""One exec stream on an open websocket: a reader (the caller's thread), a stdin feeder
and a keep-alive pinger.

The handshake is the official client's (``PodExec``); from here on the data path is ours:
frames are read straight from the socket under websocket-client's send lock, stdout frames
are gathered into chunks, stdin is sent as pre-masked frames. The client's own read loop
(``WSClient.update()``) appends every waiting frame to one growing buffer, which makes
large streams quadratic in time and linear in memory (``bench/execstream_bench.py``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

from ops.errors import ExecFailed
from ops.execstream.channels import CLOSE, STATUS, STDERR, STDIN, STDOUT, V5
from ops.execstream.framing import (
    OPCODE_BINARY,
    OPCODE_CLOSE,
    OPCODE_CONT,
    OPCODE_PING,
    OPCODE_TEXT,
    Frame,
    FrameBuffer,
    masked_frame,
)
from ops.execstream.runner import Capture, Progress, StderrTail


class WebSocket(Protocol):
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


@dataclass(frozen=True, kw_only=True)
class Pumped:
    """What a stream left when it ended: the raw exit status (None: none came) and the
    bytes moved each way."""

    status: bytes | None
    stdout_bytes: int
    stdin_bytes: int


class SocketFrames:
    """Server frames read off the socket, as many bytes per read as arrived.

    websocket-client's ``recv_data_frame`` makes four small reads per frame (the API server
    sends 4 KiB frames: ~25,000 frames per 100 MB); here one read takes a whole TLS record
    or more, and ``FrameBuffer`` cuts the frames out of it.

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
        self._frames = FrameBuffer()

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

    def next(self) -> Frame:
        """The next frame; TimeoutError if none comes in time, ConnectionError at EOF."""
        while (frame := self._frames.next()) is None:
            data = self._recv()
            if not data:
                raise ConnectionError("the API server closed the connection")
            self._frames.feed(data)
        return frame


class ExecSession:
    """One exec stream: ``pump`` it once, then ``close`` it (always)."""

    def __init__(
        self,
        ws: WebSocket,
        *,
        protocol: str,
        chunk_size: int,
        keepalive: float,
        stdin_size: int | None = None,
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.stdin_size = stdin_size
        self.chunk_size = chunk_size
        self.keepalive = keepalive
        self.stderr = StderrTail()
        self._stop = threading.Event()
        self._feeder_error: BaseException | None = None
        self._stdin_bytes = 0
        self._threads: list[threading.Thread] = []

    def pump(
        self,
        stdin: IO[bytes] | None,
        stdout: IO[bytes] | Capture,
        progress: Progress | None,
        *,
        stdin_lead: bytes = b"",
    ) -> Pumped:
        """``stdin_lead``: bytes sent before ``stdin`` (not counted as its bytes)."""
        from websocket import WebSocketConnectionClosedException

        # Pongs answer our pings, so a connection silent for 3 keep-alive periods is dead.
        self.ws.settimeout(self.keepalive * 3)
        self._start(self._ping_loop)
        if stdin is not None:
            self._start(lambda: self._feed(stdin, progress, stdin_lead))
        status: bytearray | None = None
        out_bytes = 0
        frames = SocketFrames(self.ws.sock, self.ws.lock, timeout=self.keepalive * 3)
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
                frame = frames.next()
            except TimeoutError as exc:
                raise ExecFailed(
                    f"no answer from the API server for {self.keepalive * 3:.0f} s",
                    hint="The connection looks dead; nothing was kept. Run it again.",
                ) from exc
            except (WebSocketConnectionClosedException, ConnectionError, OSError):
                break
            opcode, data = frame.opcode, frame.payload
            if opcode == OPCODE_CLOSE:
                with contextlib.suppress(Exception):
                    self.ws.send_close()
                break
            if opcode == OPCODE_PING:
                with contextlib.suppress(Exception):
                    self.ws.pong(bytes(data))
                continue
            if opcode == OPCODE_CONT:
                payload = memoryview(data)  # a fragment continues the last channel
            elif opcode in (OPCODE_BINARY, OPCODE_TEXT):
                if len(data) < 2:
                    continue  # the server's empty "channel open" frames
                channel, payload = data[0], memoryview(data)[1:]
            else:
                continue  # pongs: they only keep the read timeout from firing
            if channel == STDOUT:
                pending += payload
                out_bytes += len(payload)
                if len(pending) >= self.chunk_size:
                    flush()
            elif channel == STDERR:
                self.stderr.add(payload)
            elif channel == STATUS:
                status = (status or bytearray()) + payload
        self._end_threads()
        flush()
        if self._feeder_error is not None:
            raise self._feeder_error
        return Pumped(
            status=bytes(status) if status is not None else None,
            stdout_bytes=out_bytes,
            stdin_bytes=self._stdin_bytes,
        )

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

    def _feed(self, stdin: IO[bytes], progress: Progress | None, lead: bytes) -> None:
        from websocket import WebSocketConnectionClosedException

        prefix = bytes([STDIN])

        def send(data: bytes) -> None:
            header, masked = masked_frame(prefix + data)
            with self.ws.lock:  # websocket-client's send lock: pings and close wait
                self.ws.sock.sendall(header)
                self.ws.sock.sendall(masked)

        try:
            if lead:
                send(lead)
            while not self._stop.is_set():
                try:
                    chunk = stdin.read(self.chunk_size)
                except BaseException as exc:  # a local read error: end the stream, report it
                    self._feeder_error = exc
                    self.ws.abort()
                    return
                if not chunk:
                    break
                send(chunk)
                self._stdin_bytes += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            size, sent = self.stdin_size, self._stdin_bytes
            if size is not None and sent < size and not self._stop.is_set():
                # The remote command must never see a clean end of a short input (under v5
                # the close signal, under v4 `head -c N` waiting forever): cut the stream
                # and say so, so that a restore fails naming the input, not the dump.
                self._feeder_error = ExecFailed(
                    f"the input ended after {sent} of its {size} bytes; "
                    "the stream was cut before the command saw its end",
                    hint="Was the file changed while it was read? Nothing was kept.",
                )
                self.ws.abort()
                return
            if self.protocol == V5 and not self._stop.is_set():
                self.ws.send(bytes([CLOSE, STDIN]), OPCODE_BINARY)
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
