"""Adapter for gunicorn's ``gevent`` worker (``gunicorn -k gevent``).

gunicorn parses HTTP itself and puts the socket in ``environ["gunicorn.socket"]``.
After a WSGI call returns, its keep-alive loop reads the next request from that
socket, and nothing public lets the application end that loop without
exceptions crossing the user's WSGI stack (``ALREADY_HANDLED`` does not survive
a generator-based wrapper, and ``StopIteration`` breaks those wrappers). So a
gunicorn connection stays inside its WSGI call, which returns normally once
the connection has ended: the socket is shut down by then, gunicorn's loop
reads end of stream or fails to write (both quiet), and it closes the socket.

The 101 head is written here: gunicorn 23 would frame a 101 given to
``start_response`` as chunked. ``start_response`` is still called, so that
gunicorn logs the request as a 101.

Private names used (checked on gunicorn 23.0 - 27.0): the parser's
``unreader`` behind ``wsgi.input`` (``take_buffered()`` since 27, ``buf``
before), for bytes a client sent right behind its request head.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import gevent.socket

from ._base import Transport
from ._takeover import transport_for
from .errors import TransportUnavailable

NAME = "gunicorn"
UPGRADED = False
_TIMEOUT_KEY = "wsmiddleware.gunicorn_timeout"


def handles(environ: dict[str, Any]) -> bool:
    if "gunicorn.socket" not in environ or "gunicorn.sock" in environ:
        return False
    if not isinstance(environ["gunicorn.socket"], gevent.socket.socket):
        from . import DEV_SERVER_HINT, SUPPORTED_SERVERS

        raise TransportUnavailable(
            "this gunicorn worker is not a gevent worker; WebSocket needs one of: " + SUPPORTED_SERVERS
            + "; " + DEV_SERVER_HINT
        )
    return True


def _unread(environ: dict[str, Any]) -> bytes:
    unreader = getattr(getattr(environ.get("wsgi.input"), "reader", None), "unreader", None)
    if unreader is None:
        return b""
    if hasattr(unreader, "take_buffered"):
        return bytes(unreader.take_buffered())
    buf = getattr(unreader, "buf", None)
    if isinstance(buf, io.BytesIO):
        pending = buf.getvalue()
        unreader.buf = io.BytesIO()
        return pending
    return b""


def take_over(environ: dict[str, Any], start_response: Callable[..., Any],
              headers: list[tuple[str, str]]) -> Transport:
    sock = environ["gunicorn.socket"]
    start_response("101 Switching Protocols", headers)
    head = "HTTP/1.1 101 Switching Protocols\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    sock.sendall(head.encode("latin-1"))
    environ[_TIMEOUT_KEY] = sock.gettimeout()
    return transport_for(sock, pending=_unread(environ), remote_addr=environ.get("REMOTE_ADDR"), detach=False)


def finish(environ: dict[str, Any], transport: Transport) -> Iterable[bytes]:
    # The socket is gunicorn's again: its keep-alive loop reads it (end of stream by now).
    transport.release()
    if _TIMEOUT_KEY in environ:
        environ["gunicorn.socket"].settimeout(environ.pop(_TIMEOUT_KEY))
    return []
