"""wsmiddleware: WebSocket for any WSGI application, on gevent.

Wrap a WSGI app with :class:`WebSocketMiddleware`, mount :class:`WS` handlers on
path templates, and serve with ``gevent.pywsgi`` or ``gunicorn -k gevent``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .broadcast import broadcast
from .connection import PingWaiter, WebSocket
from .exceptions import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    PubSubError,
    WebSocketError,
)
from .handler import WS, PubSubWS
from .middleware import WebSocketMiddleware
from .options import Options
from .rpc import MessageError, MessageRouter

if TYPE_CHECKING:  # pragma: no cover
    from .client import ClientConnection, connect

__all__ = [
    "WebSocketMiddleware",
    "WS",
    "PubSubWS",
    "broadcast",
    "connect",
    "ClientConnection",
    "MessageRouter",
    "MessageError",
    "WebSocket",
    "PingWaiter",
    "Options",
    "WebSocketError",
    "HandshakeError",
    "ConnectionRejected",
    "ConnectionClosed",
    "ConnectionTimeout",
    "PubSubError",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The client (and TLS with it) loads on first use: a WSGI app that only
    # serves WebSockets does not pay for it at import.
    if name in ("connect", "ClientConnection"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
