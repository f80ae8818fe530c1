"""The one exception hierarchy of wsmiddleware, rooted at :class:`WebSocketError`."""

from __future__ import annotations

__all__ = [
    "WebSocketError",
    "HandshakeError",
    "ConnectionRejected",
    "ConnectionClosed",
    "ConnectionTimeout",
    "PubSubError",
]


class WebSocketError(Exception):
    """Base class of every error raised by wsmiddleware."""


class HandshakeError(WebSocketError):
    """The opening handshake is invalid; ``status`` is the HTTP status it earns."""

    def __init__(self, reason: str, status: int = 400, headers: list[tuple[str, str]] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.headers = list(headers or [])


class ConnectionRejected(WebSocketError):
    """The server answered the opening handshake with something other than 101."""

    def __init__(self, status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b""):
        super().__init__(f"server rejected WebSocket connection: HTTP {status}")
        self.status = status
        self.headers = list(headers or [])
        self.body = body


class ConnectionClosed(WebSocketError):
    """The connection is closed; ``code`` and ``reason`` say how."""

    def __init__(self, code: int = 1006, reason: str = ""):
        super().__init__(f"WebSocket connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionTimeout(WebSocketError):
    """An operation on a connection (opening, ping, closing) took too long."""


class PubSubError(WebSocketError):
    """A pub/sub backend could not do what was asked (for instance Redis is down)."""
