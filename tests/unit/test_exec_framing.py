"""RFC 6455 framing on bytes: server frames cut out of a buffer, client frames masked."""

from __future__ import annotations

import os

import pytest

from ops.execstream.framing import (
    OPCODE_BINARY,
    OPCODE_PING,
    FrameBuffer,
    ProtocolError,
    apply_mask,
    translate_mask,
)


@pytest.mark.parametrize("size", [0, 1, 5, 125, 126, 65535, 65536, 300_001], ids=str)
def test_client_frames_are_masked_as_websocket_client_would(size):
    from websocket._abnf import ABNF

    from ops.execstream.framing import masked_frame

    payload = os.urandom(size)
    header, masked = masked_frame(payload)
    key = header[-4:]
    assert bytes(masked) == ABNF.mask(key, payload)
    expected = ABNF(1, 0, 0, 0, ABNF.OPCODE_BINARY, 1, payload)
    expected.get_mask_key = lambda _n: key
    assert header + masked == expected.format()


@pytest.mark.parametrize("size", [0, 3, 4, 5, 65536, 300_001], ids=str)
def test_the_fallback_mask_equals_websocket_clients(size):
    from websocket._abnf import ABNF

    payload, key = os.urandom(size), os.urandom(4)
    assert bytes(translate_mask(payload, key)) == ABNF.mask(key, payload)


def test_uploads_mask_with_the_c_helper_when_installed():
    pytest.importorskip("websockets.speedups")

    assert apply_mask is not translate_mask


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A server's frame as websocket-client would write it unmasked (RFC 6455 5.2)."""
    from websocket._abnf import ABNF

    return ABNF(int(fin), 0, 0, 0, opcode, 0, payload).format()


@pytest.mark.parametrize("piece", [1, 3, 7, 4096, 1 << 20], ids=lambda n: f"fed-{n}-at-a-time")
def test_frames_are_cut_out_of_bytes_however_they_arrive(piece):
    payloads = [b"\x01" + os.urandom(n) for n in (0, 1, 124, 125, 126, 65535, 65536, 200_000)]
    wire = b"".join(server_frame(OPCODE_BINARY, p) for p in payloads)
    wire += server_frame(OPCODE_PING, b"are you there", fin=True)
    frames = FrameBuffer()
    got = []
    for start in range(0, len(wire), piece):
        frames.feed(wire[start : start + piece])
        while (frame := frames.next()) is not None:
            got.append(frame)
    assert [bytes(f.payload) for f in got] == [*payloads, b"are you there"]
    assert [f.opcode for f in got] == [OPCODE_BINARY] * len(payloads) + [OPCODE_PING]
    assert all(f.fin for f in got)
    assert frames.next() is None


def test_a_fragment_keeps_its_fin_bit():
    frames = FrameBuffer()
    frames.feed(server_frame(OPCODE_BINARY, b"\x01abc", fin=False) + server_frame(0, b"def"))
    first, second = frames.next(), frames.next()
    assert first is not None and second is not None
    assert (first.fin, second.opcode, second.fin, bytes(second.payload)) == (False, 0, True, b"def")


def test_a_masked_server_frame_is_a_protocol_error():
    from ops.execstream.framing import masked_frame

    header, masked = masked_frame(b"\x01hello")
    frames = FrameBuffer()
    frames.feed(header + masked)
    with pytest.raises(ProtocolError, match="masked frame"):
        frames.next()


def test_a_given_key_masks_deterministically():
    from ops.execstream.framing import masked_frame

    header, masked = masked_frame(b"\x00\x00\x00\x00abcd", key=b"\x01\x02\x03\x04")
    assert header == bytes([0x82, 0x80 | 8]) + b"\x01\x02\x03\x04"
    assert bytes(masked) == b"\x01\x02\x03\x04" + bytes(
        a ^ b for a, b in zip(b"abcd", b"\x01\x02\x03\x04", strict=True)
    )
