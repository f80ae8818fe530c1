"""Where frames start in the incoming byte stream, so that one feed to the parser
holds a bounded number of frames (pure, no I/O).

websockets' parser takes whatever it is fed and parses every frame in it at once
(3 to 6 µs each), and it has no way to stop after some. Fed a whole read, one
peer could hold the hub for as long as its read takes to parse (a megabyte of
6-byte frames: about a second). Fed small fixed slices, big messages pay for it
instead: the parser's buffer grows by appending, so a 1 MiB frame fed 4 KiB at a
time costs four times as much as fed whole.

So the read loop cuts a read at frame starts: a feed holds at most ``max_frames``
frame starts and any number of payload bytes. Only the headers' length fields
are read here; the parser still checks everything. A wrong cut could only cost
time, never correctness, and the scan follows the same bytes the parser does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cut"]

#: Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
MAX_HEADER = 14


def _frame_size(head: Any, i: int, end: int) -> int | None:
    """Header plus payload size of the frame whose header starts at ``head[i]``;
    None if the header is not complete before ``end``."""
    if end - i < 2:
        return None
    second = head[i + 1]
    length = second & 0x7F
    size = 6 if second & 0x80 else 2
    if length == 126:
        if end - i < 4:
            return None
        length = (head[i + 2] << 8) | head[i + 3]
        size += 2
    elif length == 127:
        if end - i < 10:
            return None
        length = int.from_bytes(head[i + 2:i + 10], "big")
        size += 8
    return size + length


def cut(data: Any, pos: int, skip: int, head: bytes, max_frames: int) -> tuple[int, int, bytes]:
    """Where to end the feed that starts at ``data[pos]``.

    ``skip`` and ``head`` say where the stream is at ``data[pos]``: ``skip`` bytes
    of the current frame are still to come, or (``skip`` 0) ``head`` holds the
    first bytes of a header whose rest is in ``data``. Returns ``(end, skip,
    head)``: feed ``data[pos:end]``; the new state holds at ``data[end]``.
    """
    n = len(data)
    if skip >= n - pos:
        return n, skip - (n - pos), head
    pos += skip
    frames = 0
    if head:
        joined = head + bytes(data[pos:pos + MAX_HEADER - len(head)])
        size = _frame_size(joined, 0, len(joined))
        if size is None:
            return n, 0, joined
        frames = 1
        pos += size - len(head)
        if pos >= n:
            return n, pos - n, b""
    while pos < n:
        if frames >= max_frames:
            return pos, 0, b""
        size = _frame_size(data, pos, n)
        if size is None:
            return n, 0, bytes(data[pos:n])
        frames += 1
        pos += size
    return n, pos - n, b""
