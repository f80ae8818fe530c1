"""Adapter for gevent-websocket's ``WebSocketHandler`` / ``GeventWebSocketWorker``.

That handler answers the handshake itself before calling the application and
puts its own object in ``environ["wsgi.websocket"]``. The connection stays in
its WSGI call.

Private names used (checked on gevent-websocket 0.10.1): ``ws.stream.handler``
(its handler: ``socket`` and ``rfile``) and ``ws.closed`` (set, so that it does
not send a close frame of its own after ours).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ._base import Transport
from ._takeover import take_buffered, transport_for

NAME = "gevent-websocket"
UPGRADED = True


def handles(environ: dict[str, Any]) -> bool:
    gws = environ.get("wsgi.websocket")
    return gws is not None and getattr(getattr(gws, "stream", None), "handler", None) is not None


def take_over(environ: dict[str, Any], start_response: Callable[..., Any],
              headers: list[tuple[str, str]]) -> Transport:
    gws = environ["wsgi.websocket"]
    handler = gws.stream.handler
    pending = take_buffered(handler.rfile, handler.socket)
    transport = transport_for(handler.socket, pending=pending, remote_addr=environ.get("REMOTE_ADDR"),
                              detach=False)
    transport.origin = getattr(handler, "server", None)
    return transport


def finish(environ: dict[str, Any], transport: Transport) -> Iterable[bytes]:
    # Its handler closes "its" websocket after the call returns; ours is closed already.
    gws = environ.get("wsgi.websocket")
    if gws is not None:
        gws.closed = True
    return []
