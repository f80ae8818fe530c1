"""What ``WS.on_handshake`` returned or raised, turned into accept or reject.

The contract (README, "What on_handshake may return"):

* ``None`` accepts, with a subprotocol negotiated from ``handler.subprotocols``;
* a ``str`` accepts with that subprotocol, which the client must have offered;
* a WSGI response, returned or raised (WebOb, werkzeug/Flask, any WSGI
  callable), rejects: its status, headers and body reach the client as given;
* ``False`` rejects with 403;
* a raised :class:`HandshakeError` rejects with its status.

Anything else is a programming error and refuses the handshake with 500. The
safe side on purpose: a lax reading used to open the socket on ``return 403``.
"""

from __future__ import annotations

import logging
import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import webob

from . import handshake
from .exceptions import HandshakeError
from .handler import WS
from .integration import Integration

__all__ = ["STATE_KEY", "Accept", "Reject", "consult", "interpret"]

logger = logging.getLogger("wsmiddleware.handshake")

#: environ key of the dict on_handshake fills; it seeds ``websocket.state``.
STATE_KEY = "wsmiddleware.state"
#: The WSGI routing-args convention (``((positional...), {named...})``); WebOb's ``request.urlvars``.
ROUTING_ARGS_KEY = "wsgiorg.routing_args"

# A bad answer is logged with its repr: long enough to recognise it, short enough
# that a returned request body or a big dict cannot flood the log.
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 200

_INTERNAL = HandshakeError("internal error while vetting the WebSocket handshake (see the server log)", 500)
_FORBIDDEN = HandshakeError("WebSocket connection refused by the application", 403)


@dataclass(frozen=True)
class Accept:
    """Open the connection with ``handler``, answering with ``subprotocol``."""

    handler: WS
    subprotocol: str | None


@dataclass(frozen=True)
class Reject:
    """The complete HTTP answer refusing the upgrade, already rendered; a WSGI app itself.

    Rendered up front so that a rejection which fails as a WSGI app becomes our
    500 rather than an exception thrown through the server, and so that
    ``reason`` (the close reason under gevent-websocket, which sent its 101
    already) is known.
    """

    status: str
    headers: list[tuple[str, str]]
    body: list[bytes]
    reason: str

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(self.status, self.headers)
        return self.body


def consult(target: WS | type[WS], request: webob.Request, url_vars: dict[str, Any],
            integration: Integration | None = None) -> Accept | Reject:
    """Build the handler (``target`` may be a class), call ``on_handshake``, interpret the answer."""
    environ = request.environ
    _set_routing_args(environ, url_vars)
    if not isinstance(environ.get(STATE_KEY), dict):
        environ[STATE_KEY] = {}
    name = _name(target)
    try:
        handler = target() if isinstance(target, type) else target
    except Exception:
        logger.exception("%s() raised; refusing the handshake with 500", name)
        return _refuse(_INTERNAL, environ)
    try:
        if integration is None:
            answer = handler.on_handshake(request)
        else:
            answer = integration.handshake(request, handler.on_handshake)
    except HandshakeError as exc:
        return _refuse(exc, environ)
    except Exception as exc:
        # werkzeug's HTTPException (flask.abort) and webob.exc are WSGI apps themselves.
        if _is_wsgi_app(exc):
            return _render(cast("Callable[..., Any]", exc), environ, name)
        logger.exception("%s.on_handshake raised; refusing the handshake with 500", name)
        return _refuse(_INTERNAL, environ)
    return interpret(handler, request, answer)


def interpret(handler: WS, request: webob.Request, answer: Any) -> Accept | Reject:
    """Apply the contract to what ``handler.on_handshake(request)`` returned."""
    name = _name(handler)
    if answer is None:
        return Accept(handler, handshake.select_subprotocol(request, handler.subprotocols))
    if answer is False:
        return _refuse(_FORBIDDEN, request.environ)
    if isinstance(answer, str):
        offered = handshake.offered_subprotocols(request)
        if answer in offered:
            return Accept(handler, answer)
        logger.error(
            "%s.on_handshake returned subprotocol %s, which the client did not offer (it offered %s); "
            "refusing the handshake with 500",
            name, _repr.repr(answer), _repr.repr(offered),
        )
        return _refuse(_INTERNAL, request.environ)
    if _is_wsgi_app(answer):
        return _render(answer, request.environ, name)
    logger.error(
        "%s.on_handshake returned %s%s; expected None, a subprotocol the client offered, False "
        "or a WSGI response: refusing the handshake with 500",
        name, _repr.repr(answer), " (a class: an instance of it was meant?)" if isinstance(answer, type) else "",
    )
    return _refuse(_INTERNAL, request.environ)


def _is_wsgi_app(value: Any) -> bool:
    # Duck typing, so that no web framework needs importing. A class is callable
    # too, but calling one builds an instance: returning HTTPForbidden instead of
    # HTTPForbidden() is a mistake to report, not a response.
    return callable(value) and not isinstance(value, (type, str, bytes, bool))


def _refuse(error: HandshakeError, environ: dict[str, Any]) -> Reject:
    """Our own plain-text rejection: ``error.status`` and its one-line reason."""
    if error.status < 500:
        # PATH_INFO as the server gave it: request.path would decode it, and any bytes may come.
        logger.info("rejected WebSocket handshake for %r: %s", environ.get("PATH_INFO"), error.reason)
    response = handshake.rejection(error)
    return Reject(response.status, response.headerlist, [response.body], error.reason)


def _render(app: Callable[..., Any], environ: dict[str, Any], name: str) -> Reject:
    """Run the application's rejection ``app`` to completion; a failure in it is logged and becomes 500."""
    started: list[Any] = []
    body: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        # Nothing is sent before the app returns, so a second call (with exc_info) simply replaces the first.
        started[:] = [status, list(headers)]
        return body.append

    try:
        chunks = app(environ, start_response)
        try:
            body.extend(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if not started:
            raise TypeError("it never called start_response")
        status = started[0]
        code = int(status.split(None, 1)[0]) if isinstance(status, str) else 0
        # A 1xx would tell the server the connection switched (101) or is still going.
        if not 200 <= code <= 599:
            raise ValueError(f"status {status!r} cannot refuse an upgrade")
        if not all(isinstance(chunk, bytes) for chunk in body):
            raise TypeError("its body is not made of bytes")
    except Exception:
        logger.exception("%s.on_handshake gave a rejection %s that fails as a WSGI app; refusing with 500",
                         name, _repr.repr(app))
        return _refuse(_INTERNAL, environ)
    return Reject(status, started[1], body, status)


def _set_routing_args(environ: dict[str, Any], url_vars: dict[str, Any]) -> None:
    # An outer router may have set it already: keep its positional args and named
    # ones, the route's url_vars winning a clash since they are the most specific.
    existing = environ.get(ROUTING_ARGS_KEY)
    if existing is None:
        # The route's own dict: the environ lives as long as the connection.
        environ[ROUTING_ARGS_KEY] = ((), url_vars)
        return
    args: tuple[Any, ...] = ()
    named: dict[str, Any] = {}
    if isinstance(existing, (tuple, list)) and len(existing) == 2:
        args = tuple(existing[0] or ())
        named = dict(existing[1] or {})
    named.update(url_vars)
    environ[ROUTING_ARGS_KEY] = (args, named)


def _name(target: Any) -> str:
    cls = target if isinstance(target, type) else type(target)
    return f"{cls.__module__}.{cls.__qualname__}"
