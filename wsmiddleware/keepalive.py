"""One ticker greenlet per process that pings idle connections and drops dead ones.

A greenlet per connection would cost memory on every idle socket; a single
ticker walking the open connections a few times per ping interval is cheaper.
It also lets readers that have been waiting a while park (see connection.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import gevent

if TYPE_CHECKING:  # pragma: no cover
    from .connection import WebSocket

__all__ = ["KeepaliveTicker", "keepalive_ticker"]

#: Connections visited between two turns of the event loop (about 0.1 ms of work).
STRIDE = 128
#: Any positive sleep lets the loop poll for I/O before the walk goes on.
YIELD_S = 1e-6


class KeepaliveTicker:
    """Calls ``websocket._tick(now)`` on each registered connection periodically."""

    def __init__(self) -> None:
        self.connections: set[WebSocket] = set()
        self.period = 1.0
        self._greenlet: gevent.Greenlet | None = None

    def add(self, websocket: WebSocket) -> None:
        options = websocket.options
        shortest = min(x for x in (options.ping_interval, options.ping_timeout, 4.0) if x is not None)
        # Tick a few times per interval so that deadlines are met within ~25 %.
        self.period = max(0.02, min(self.period, shortest / 4))
        self.connections.add(websocket)
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)

    def discard(self, websocket: WebSocket) -> None:
        self.connections.discard(websocket)

    def _run(self) -> None:
        while self.connections:
            gevent.sleep(self.period)
            now = time.monotonic()
            for i, websocket in enumerate(list(self.connections)):
                if i and not i % STRIDE:
                    # Let the event loop poll in between: a message arriving now (a
                    # broadcast to fan out, say) waits for a stride, not for the walk.
                    gevent.sleep(YIELD_S)
                try:
                    websocket._tick(now)
                except Exception:  # a closed connection must not stop the others' keepalive
                    self.connections.discard(websocket)
        self._greenlet = None


keepalive_ticker = KeepaliveTicker()
