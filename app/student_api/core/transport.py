"""uvicorn's httptools protocol, with each response's headers and body leaving in one send().

uvicorn writes a response's status line and headers to the socket when the app sends
``http.response.start``, and the body when it sends ``http.response.body``: two ``send()``
system calls per response, each waking the client (and, on loopback, running the client's
receive path) while this process holds the GIL. For ``GET /api/student`` the first of them
was the largest single item in the profile (py-spy ``--gil``, app/README.md). uvicorn has no
option to join them; its ``http=`` setting takes a protocol class, and this one is uvicorn's
own ``HttpToolsProtocol`` whose transport holds a write back until the next write or the
end of the event loop's turn, whichever comes first. A response sent without a pause between
its messages (every ``Response`` of Starlette's) then leaves in one ``writelines()``, which
uvloop sends as one ``writev()``; one that pauses (a stream) is delayed by no more than one
turn of the loop. The order of the bytes never changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Data = bytes | bytearray | memoryview


class JoiningTransport(asyncio.Transport):
    """Wraps a transport: a write is held until the next one (both then go out together) or
    until the loop's next turn; everything else goes straight to the wrapped transport."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: Data | None = None

    def write(self, data: Data) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif data:
            self._held = data
            self._loop.call_soon(self.flush)

    def writelines(self, list_of_data: Iterable[Data]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Write what is held, if anything (and the connection still takes it)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (len(held) if held is not None else 0)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class JoinedWritesProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` on a :class:`JoiningTransport` (``Config(http=...)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance check.)
        super().connection_made(JoiningTransport(transport, self.loop))
