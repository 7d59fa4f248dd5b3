"""RFC 6455 framing on bytes: server frames parsed from a buffer, client frames masked.

Pure functions and a buffer: no socket, no thread. The session feeds it what the socket
returned and takes whole frames out (``tests/unit/test_exec_framing.py`` tests it on bytes).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

# Opcodes (RFC 6455 5.2).
OPCODE_CONT, OPCODE_TEXT, OPCODE_BINARY = 0x0, 0x1, 0x2
OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x8, 0x9, 0xA


class ProtocolError(ConnectionError):
    """The peer broke RFC 6455 (a server must never mask its frames)."""


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    fin: bool
    payload: bytearray


class FrameBuffer:
    """Bytes as they arrive, and the whole server frames in them.

    ``feed`` the bytes a read returned; ``next`` gives one frame, or None until more bytes
    are fed. Consumed bytes are dropped only when more are fed, so a read that brought many
    frames costs one copy of what is left, not one per frame. Server frames are never
    masked (RFC 6455 5.1).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next(self) -> Frame | None:
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        first, second = buf[pos], buf[pos + 1]
        length, head = second & 0x7F, 2
        if length == 126:
            if available < 4:
                return None
            length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if available < 10:
                return None
            length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        if second & 0x80:
            raise ProtocolError("the server sent a masked frame (protocol error)")
        if available < head + length:
            return None
        start = pos + head
        self._pos = start + length
        return Frame(first & 0x0F, bool(first & 0x80), buf[start : self._pos])


@functools.cache
def _xor_tables() -> tuple[bytes, ...]:
    return tuple(bytes(b ^ k for b in range(256)) for k in range(256))


def translate_mask(payload: bytes, key: bytes) -> bytes | bytearray:
    """XOR with ``key`` as four strided ``bytes.translate`` calls (one per key byte)."""
    tables = _xor_tables()
    masked = bytearray(len(payload))
    for i in range(4):
        masked[i::4] = payload[i::4].translate(tables[key[i]])
    return masked


def _mask_function() -> Callable[[bytes, bytes], bytes | bytearray]:
    # The `websockets` package's C helper XORs at memory speed; websocket-client masks in
    # pure Python and our translate fallback is a few times faster than that, still CPU
    # taken from the API server, kubelet and pg_restore on the same machine
    # (bench/execstream_bench.py measures uploads). The fallback serves platforms without a
    # wheel of `websockets`.
    try:
        from websockets.speedups import apply_mask
    except ImportError:
        return translate_mask
    return apply_mask


apply_mask = _mask_function()


def masked_frame(payload: bytes, key: bytes | None = None) -> tuple[bytes, bytes | bytearray]:
    """A client's final binary frame (RFC 6455 5.3): header with a 4-byte key (fresh and
    random unless given), and the masked payload, to be sent one after the other."""
    key = os.urandom(4) if key is None else key
    length = len(payload)
    if length < 126:
        header = bytes([0x82, 0x80 | length])
    elif length < 65536:
        header = bytes([0x82, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x82, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + key, apply_mask(payload, key)
