"""JoiningTransport over a real socket pair: bytes in order, nothing held back for long."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from student_api.core.transport import JoiningTransport


async def _pair() -> tuple[JoiningTransport, socket.socket]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    theirs.setblocking(False)
    return JoiningTransport(transport, loop), theirs


async def _received(peer: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(peer, 65536), 5)
        if not chunk:
            break
        data += chunk
    return data


def test_writes_arrive_in_order_and_a_lone_write_is_flushed() -> None:
    async def scenario() -> tuple[bytes, bytes, bytes]:
        transport, peer = await _pair()
        transport.write(b"head;")
        transport.write(b"body;")
        transport.write(b"lone;")  # held: nothing follows it
        assert transport.get_write_buffer_size() == 5
        first = await _received(peer, 15)
        transport.write(b"last")
        transport.close()  # flushes what it holds, then closes
        last = await _received(peer, 4)
        end = await asyncio.get_running_loop().sock_recv(peer, 10)
        peer.close()
        return first, last, end

    first, last, end = uvloop.run(scenario())

    assert (first, last, end) == (b"head;body;lone;", b"last", b"")


def test_abort_drops_what_is_held() -> None:
    async def scenario() -> bytes:
        transport, peer = await _pair()
        transport.write(b"never")
        transport.abort()
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer, 10), 5)
        peer.close()
        return data

    assert uvloop.run(scenario()) == b""
