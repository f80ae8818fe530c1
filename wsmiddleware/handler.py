"""Handlers: the callback objects routes are mounted with.

Shaped after pulsar's ``WS``: every callback is optional and receives the
:class:`~wsmiddleware.connection.WebSocket` it concerns. A route mapped to an
instance shares it among its connections; a route mapped to a subclass gets a
fresh instance per connection, so per-connection data may live on ``self``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import webob

    from .connection import WebSocket

__all__ = ["WS"]


class WS:
    """Base class of WebSocket handlers. Override the callbacks you need.

    All callbacks of one connection run in that connection's greenlet, in order.
    A callback that raises is logged and closes its connection with 1011.
    """

    #: Subprotocols this handler speaks, most preferred first.
    subprotocols: Sequence[str] = ()

    def on_handshake(self, request: webob.Request) -> Any:
        """Vet the opening handshake before the 101 is sent.

        Return ``None`` to accept (subprotocol from :attr:`subprotocols`), a
        subprotocol name to accept with it, or a ``webob`` response (or raise a
        ``webob.exc`` one) to reject: its status, headers and body reach the client.
        """
        return None

    def on_open(self, websocket: WebSocket) -> None:
        """The connection is open; ``websocket.write`` may be used from now on."""

    def on_message(self, websocket: WebSocket, message: str) -> None:
        """A complete text message arrived."""

    def on_bytes(self, websocket: WebSocket, data: bytes) -> None:
        """A complete binary message arrived."""

    def on_ping(self, websocket: WebSocket, payload: bytes) -> None:
        """A ping arrived; the default answers it with a pong carrying the same payload."""
        websocket.pong(payload)

    def on_pong(self, websocket: WebSocket, payload: bytes) -> None:
        """A pong arrived (answering ``websocket.ping()`` or unsolicited)."""

    def on_close(self, websocket: WebSocket) -> None:
        """The connection ended; called exactly once, with ``websocket.close_code`` set."""
