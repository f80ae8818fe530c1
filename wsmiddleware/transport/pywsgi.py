"""Adapter for ``gevent.pywsgi`` (and gunicorn's ``gevent_pywsgi`` worker, which runs it).

pywsgi sends a 101 given to ``start_response`` unchunked once ``write(b"")``
is called, and closes the socket when the WSGI call returns. Its socket object
is detached at the take-over, so the connection may outlive the call
(parking): pywsgi then finds its socket closed, reads no further request and
closes nothing of ours.

Private names used (checked on gevent 24.10 - 26.9): none of gevent's. The
handler is ``start_response.__self__`` (its documented ``socket`` and
``server``); where a middleware wrapped ``start_response``, the socket comes
from the standard library's ``SocketIO._sock`` behind ``wsgi.input`` and the
connection does not park.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import gevent.pywsgi
import gevent.socket
from gevent.pool import Pool

from ._base import Transport, logger
from ._takeover import take_buffered, transport_for

NAME = "pywsgi"
UPGRADED = False

_told: set[str] = set()


def _tell_once(what: str, message: str) -> None:
    if what not in _told:
        _told.add(what)
        logger.info(message)


def _reader(environ: dict[str, Any]) -> Any:
    """pywsgi's buffered socket reader, even where it wrapped it in its ``Input``.

    pywsgi hands the raw reader over only when ``Connection`` is exactly
    "upgrade" or ``Upgrade`` exactly "websocket"; a valid handshake may list
    more tokens. Its ``Input`` reads nothing before asked, so ``rfile`` holds all.
    """
    reader = environ.get("wsgi.input")
    inner = getattr(reader, "rfile", None)
    if not isinstance(reader, io.BufferedReader) and isinstance(inner, io.BufferedReader):
        return inner
    return reader


def _reader_socket(reader: Any) -> Any:
    return getattr(getattr(reader, "raw", None), "_sock", None)


def handles(environ: dict[str, Any]) -> bool:
    reader = _reader(environ)
    sock = environ.get("gunicorn.sock") or _reader_socket(reader)
    return isinstance(reader, io.BufferedReader) and isinstance(sock, gevent.socket.socket)


def take_over(environ: dict[str, Any], start_response: Callable[..., Any],
              headers: list[tuple[str, str]]) -> Transport:
    write = start_response("101 Switching Protocols", headers)
    write(b"")
    reader = _reader(environ)
    handler: Any = getattr(start_response, "__self__", None)
    if not isinstance(handler, gevent.pywsgi.WSGIHandler):
        handler = None
        _tell_once("wrapped", "start_response is not pywsgi's own (a middleware wraps it): WebSocket "
                   "connections stay in their request instead of parking when idle")
    sock = environ.get("gunicorn.sock") or (handler.socket if handler is not None else None) \
        or _reader_socket(reader)
    pending = take_buffered(reader, sock)
    if isinstance(reader, io.BufferedReader):
        # All it buffered is ours now, and its socket is detached below: closing it
        # frees its 8 KiB buffer, and an empty body in its place lets the reader and
        # its socket wrapper go too (the environ lives as long as the connection).
        reader.close()
        environ["wsgi.input"] = io.BytesIO()
    server = handler.server if handler is not None else None
    transport = transport_for(sock, pending=pending, remote_addr=environ.get("REMOTE_ADDR"),
                              detach=True, parkable=handler is not None, origin=server)
    pool = getattr(server, "pool", None)
    transport.pool = pool if isinstance(pool, Pool) else None
    return transport


def finish(environ: dict[str, Any], transport: Transport) -> Iterable[bytes]:
    return []
