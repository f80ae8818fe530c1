"""Unit tests of the frame-start scanner that bounds what one feed to the parser holds (pure)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from wsmiddleware._slicing import cut


def client_frame(payload: bytes, fin: bool = True, opcode: Opcode = Opcode.BINARY) -> bytes:
    """A masked frame as a client sends it, made by websockets itself."""
    return Frame(opcode, payload, fin=fin).serialize(mask=True)


def server_frame(payload: bytes) -> bytes:
    return Frame(Opcode.BINARY, payload).serialize(mask=False)


def feeds(stream: bytes, reads: list[int], max_frames: int) -> list[bytes]:
    """Split ``stream`` into reads of the given sizes, then cut each as the read loop does."""
    out: list[bytes] = []
    skip, head, pos = 0, b"", 0
    sizes = [*reads, len(stream)]
    for size in sizes:
        data = memoryview(stream[pos:pos + size])
        pos += len(data)
        at = 0
        while at < len(data):
            end, skip, head = cut(data, at, skip, head, max_frames)
            assert at < end <= len(data)
            out.append(bytes(data[at:end]))
            at = end
        if pos >= len(stream):
            break
    assert skip == 0 and head == b"", "the scan ends at a frame boundary with the stream"
    return out


def frame_starts(stream: bytes, masked: bool) -> list[int]:
    """Offsets where frames start, found by websockets' own parser, fed byte by byte."""
    protocol = Protocol(Side.SERVER if masked else Side.CLIENT, state=State.OPEN, max_size=None)
    starts, seen = [0], 0
    for i in range(len(stream)):
        protocol.receive_data(stream[i:i + 1])
        seen += len(protocol.events_received())
        if seen == len(starts) and i + 1 < len(stream):
            starts.append(i + 1)
    return starts


def test_a_read_inside_a_big_payload_is_fed_whole():
    frame = client_frame(os.urandom(300_000))
    cuts = feeds(frame, [100, 65536, 65536, 200_000], 64)
    # Each read is one feed: payload bytes never make a cut.
    assert [len(c) for c in cuts] == [100, 65536, 65536, len(frame) - 100 - 2 * 65536]


def test_a_flood_of_tiny_frames_is_cut_every_max_frames():
    stream = b"".join(client_frame(b"", fin=False, opcode=Opcode.TEXT if i == 0 else Opcode.CONT)
                      for i in range(1000))
    cuts = feeds(stream, [len(stream)], 64)
    assert len(cuts) == 16
    assert all(len(c) == 64 * 6 for c in cuts[:-1])


def test_big_frames_then_a_flood_in_one_read():
    """Growing with what came before would let a flood ride on a big frame; cuts do not."""
    stream = client_frame(os.urandom(70_000)) + b"".join(client_frame(b"x") for _ in range(500))
    cuts = feeds(stream, [len(stream)], 64)
    assert len(cuts[0]) == 70_000 + 14 + 63 * 7
    assert all(len(c) <= 64 * 7 for c in cuts[1:])


@pytest.mark.parametrize("make", [client_frame, server_frame])
def test_every_header_form(make):
    stream = b"".join(make(os.urandom(n)) for n in (0, 1, 125, 126, 127, 65535, 65536, 70_000))
    for max_frames in (1, 2, 3):
        cuts = feeds(stream, [1] * 40 + [3, 7, 11], max_frames)
        assert b"".join(cuts) == stream


payloads = st.lists(st.integers(min_value=0, max_value=70_000), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(sizes=payloads, reads=st.lists(st.integers(min_value=1, max_value=9000), max_size=30),
       max_frames=st.integers(min_value=1, max_value=5), masked=st.booleans())
def test_cuts_fall_on_frame_starts_and_hold_at_most_max_frames(sizes, reads, max_frames, masked):
    make = client_frame if masked else server_frame
    stream = b"".join(make(bytes(n)) for n in sizes)
    starts = set(frame_starts(stream, masked)) if len(stream) < 20_000 else None
    cuts = feeds(stream, reads, max_frames)
    assert b"".join(cuts) == stream
    offset = 0
    boundaries = sorted({0, *[o for o in _offsets(sizes, masked)]})
    for chunk in cuts:
        inside = [b for b in boundaries if offset <= b < offset + len(chunk)]
        assert len(inside) <= max_frames
        offset += len(chunk)
    if starts is not None:
        assert starts == set(boundaries)


def _offsets(sizes: list[int], masked: bool) -> list[int]:
    out, at = [], 0
    for n in sizes:
        out.append(at)
        header = 2 + (2 if 126 <= n < 65536 else 8 if n >= 65536 else 0) + (4 if masked else 0)
        at += header + n
    return out
