"""Taking the socket over from the WSGI server: one adapter per server.

Each adapter module is the only place that knows its server's ways (see
DESIGN.md): how the 101 goes out, where the socket and any bytes read past the
request head are, and whether the WSGI call may return while the connection
lives on (parking). All of them end in a :class:`Transport`.
"""

from __future__ import annotations

from typing import Any

from ._base import READ_BUFFER_SIZE, RECV_SIZE, TLSTransport, Transport
from .errors import TransportUnavailable

__all__ = ["Transport", "TLSTransport", "TransportUnavailable", "detect", "SUPPORTED_SERVERS",
           "RECV_SIZE", "READ_BUFFER_SIZE"]

SUPPORTED_SERVERS = (
    "gevent.pywsgi.WSGIServer, gunicorn -k gevent, gunicorn -k gevent_pywsgi, "
    "gevent-websocket's WebSocketHandler / GeventWebSocketWorker"
)
#: Said with every 501: what serves the app with WebSocket while developing.
DEV_SERVER_HINT = "for development, python -m wsmiddleware serve module:application --reload serves it"


def detect(environ: dict[str, Any]) -> Any:
    """The adapter module for the server of this request, or raise :class:`TransportUnavailable`.

    An adapter has ``NAME``, ``UPGRADED`` (the server sent the 101 itself),
    ``take_over(environ, start_response, headers) -> Transport`` and
    ``finish(environ, transport) -> WSGI iterable``.
    """
    from . import gevent_websocket, gunicorn, pywsgi

    for adapter in (gevent_websocket, gunicorn, pywsgi):
        if adapter.handles(environ):
            return adapter
    raise TransportUnavailable(
        f"server {environ.get('SERVER_SOFTWARE', 'unknown')!r} cannot hand its socket over; "
        "WebSocket needs one of: " + SUPPORTED_SERVERS + "; " + DEV_SERVER_HINT
    )
