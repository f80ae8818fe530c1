"""The transport layer's one error."""

from __future__ import annotations

from ..exceptions import WebSocketError

__all__ = ["TransportUnavailable"]


class TransportUnavailable(WebSocketError):
    """The WSGI server cannot hand its socket over; the reason names the server."""
