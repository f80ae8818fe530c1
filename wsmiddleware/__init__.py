"""wsmiddleware: WebSocket for any WSGI application, on gevent.

Wrap a WSGI app with :class:`WebSocketMiddleware`, mount :class:`WS` handlers on
path templates, and serve with ``gevent.pywsgi`` or ``gunicorn -k gevent``.
"""

from __future__ import annotations

from .broadcast import broadcast
from .client import ClientConnection, connect
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
