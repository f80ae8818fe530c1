"""Send one message to many connections, encoding its frame once.

A server frame is unmasked, so its bytes are the same for every server
connection without an extension in effect (``shares_frames``): they are built
once and the same object is queued on each. The others (compressed, or client
side, which must mask) get a normal ``write``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._frames import encode_frame
from .exceptions import ConnectionClosed

__all__ = ["broadcast"]


def broadcast(websockets: Iterable[Any], message: str | bytes) -> int:
    """Send ``message`` to each open connection in ``websockets``; return how many took it.

    Never waits for a slow reader: what the socket does not take at once goes to
    the connection's bounded send queue, where the slow-consumer policy applies
    (a connection that drops or is closed for it is not counted). Closed
    connections are skipped.
    """
    frame: bytes | None = None
    sent = 0
    for websocket in websockets:
        if websocket.closed:
            continue
        if not websocket.shares_frames:
            dropped = websocket.dropped
            try:
                websocket.write(message)
            except ConnectionClosed:
                continue
            if websocket.dropped == dropped and not websocket.closed:
                sent += 1
            continue
        if frame is None:
            frame = encode_frame(message)
        if websocket.send_prepared(frame):
            sent += 1
    return sent
