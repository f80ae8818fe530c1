"""``WebSocketMiddleware``: route upgrade requests to handlers, pass the rest through."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import webob

from . import _answer, handshake, shutdown, transport
from .connection import WebSocket
from .exceptions import HandshakeError
from .handler import WS
from .integration import Integration
from .options import Options
from .registry import Registry
from .routing import Route, Router

__all__ = ["WebSocketMiddleware"]

logger = logging.getLogger("wsmiddleware.middleware")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WebSocketMiddleware:
    """Wrap a WSGI ``app`` and serve WebSocket handlers on ``routes``.

    ``routes`` maps path templates (``"/ws/chat/{room}"``) to a :class:`WS`
    instance (shared by its connections) or subclass (one instance each), or
    to a ``(handler, {option: value})`` pair. Keyword ``options`` are the
    defaults of :class:`~wsmiddleware.options.Options` for every route.

    Requests that are not WebSocket upgrades, and upgrades to paths no route
    matches, reach ``app`` unchanged. Without ``app``, those get 426 / 404.

    ``max_connections`` given here caps the open connections of this
    middleware (all routes); given to :meth:`mount`, it caps that route's.
    Beyond a cap, handshakes get 503. ``integration`` (an
    :class:`~wsmiddleware.integration.Integration`) is how a web framework wraps
    handshakes and callbacks; :mod:`wsmiddleware.flask` and
    :mod:`wsmiddleware.django` make one. :attr:`connections` holds the open server
    connections (client connections of the process are never counted).
    """

    def __init__(
        self,
        app: WSGIApp | None = None,
        routes: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.max_connections: int | None = options.pop("max_connections", None)
        #: What a web framework wraps around handshakes and callbacks (:mod:`wsmiddleware.integration`).
        self.integration: Integration | None = options.pop("integration", None)
        self.options = Options().merged(options)
        #: The open server connections of this middleware.
        self.connections = Registry()
        self.router = Router()
        for template, target in (routes or {}).items():
            if isinstance(target, tuple):
                handler, route_options = target
                self.mount(template, handler, **route_options)
            else:
                self.mount(template, target)

    def mount(self, path: str, handler: WS | type[WS], **options: Any) -> Route:
        """Serve ``handler`` at the path template ``path`` with per-route ``options``."""
        if not (isinstance(handler, WS) or (isinstance(handler, type) and issubclass(handler, WS))):
            raise TypeError(f"handler for {path!r} must be a WS instance or subclass, not {handler!r}")
        if isinstance(handler, type):
            _check_no_arguments(path, handler)
        route_cap = options.pop("max_connections", None)
        return self.router.add(path, handler, {"options": self.options.merged(options), "max_connections": route_cap})

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        found = self.router.match(environ.get("PATH_INFO") or "/")
        if found is None:
            if self.app is not None:
                return self.app(environ, start_response)
            return self._plain(404, "no WebSocket route matches this path")(environ, start_response)
        if not handshake.is_upgrade_request(environ):
            if self.app is not None:
                return self.app(environ, start_response)
            response = self._plain(426, "this URL speaks WebSocket: send an Upgrade: websocket request")
            response.headers["Upgrade"] = "websocket"
            response.headers["Sec-WebSocket-Version"] = "13"
            return response(environ, start_response)
        route, url_vars = found
        return self._upgrade(environ, start_response, route, url_vars)

    @staticmethod
    def _plain(status: int, reason: str) -> webob.Response:
        return webob.Response(status=status, content_type="text/plain", charset="utf-8", text=reason + "\n")

    def _upgrade(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        route: Route,
        url_vars: dict[str, Any],
    ) -> Iterable[bytes]:
        options: Options = route.options["options"]
        try:
            adapter = transport.detect(environ)
        except transport.TransportUnavailable as exc:
            logger.error("cannot serve WebSocket on %s: %s", environ.get("PATH_INFO"), exc)
            return self._plain(501, str(exc))(environ, start_response)
        already_upgraded = adapter.UPGRADED
        request = webob.Request(environ)
        try:
            key = "" if already_upgraded else handshake.validate(request)
            handshake.check_origin(request, options.allowed_origins)
            shutdown.admit()
            self._check_capacity(route, options)
        except HandshakeError as exc:
            # PATH_INFO as the server gave it: request.path would decode it, and any bytes may come.
            logger.info("rejected WebSocket handshake for %r: %s", environ.get("PATH_INFO"), exc.reason)
            if already_upgraded:
                return self._refuse_upgraded(environ, start_response, options, exc.reason)
            return handshake.rejection(exc)(environ, start_response)
        # The strict on_handshake contract lives in _answer: anything but an accept is a refusal.
        answer = _answer.consult(route.handler, request, url_vars, self.integration)
        if isinstance(answer, _answer.Reject):
            if already_upgraded:
                return self._refuse_upgraded(environ, start_response, options, answer.reason)
            return answer(environ, start_response)
        handler, subprotocol = answer.handler, answer.subprotocol
        if already_upgraded:
            # Its handler negotiated no extension and no subprotocol.
            subprotocol = getattr(environ["wsgi.websocket"], "protocol", None) or None
            accepted = handshake.Accepted([], handshake.open_protocol(options), subprotocol, False)
        else:
            try:
                accepted = handshake.accept(request, key, options, subprotocol)
            except HandshakeError as exc:
                return handshake.rejection(exc)(environ, start_response)
        conn_transport = adapter.take_over(environ, start_response, accepted.headers)
        websocket = WebSocket(
            conn_transport,
            accepted.protocol,
            handler,
            options,
            environ=environ,
            url_vars=url_vars,
            subprotocol=accepted.subprotocol,
            compressed=accepted.compressed,
            registry=self.connections,
            integration=self.integration,
        )
        self.connections.add(websocket, route.template)
        handed = environ.pop(_answer.STATE_KEY, None)
        if isinstance(handed, dict):
            websocket.state = handed  # what on_handshake put there; one dict, not two
        # This frame lasts as long as the connection: what only the handshake
        # needed goes now (websocket.request rebuilds the Request on demand).
        del request, accepted, key, answer
        try:
            websocket.run()
        except Exception:
            # Nothing may cross the server's and the user's WSGI stack after the 101.
            logger.exception("WebSocket connection %r failed", websocket)
            conn_transport.abort()
        return adapter.finish(environ, conn_transport)

    def _check_capacity(self, route: Route, options: Options) -> None:
        full = self.max_connections is not None and len(self.connections) >= self.max_connections
        route_cap = route.options.get("max_connections")
        if full or (route_cap is not None and self.connections.count(route.template) >= route_cap):
            raise HandshakeError("too many WebSocket connections, try again later", 503, [("Retry-After", "5")])

    def _refuse_upgraded(
        self, environ: dict[str, Any], start_response: Callable[..., Any], options: Options, reason: str
    ) -> Iterable[bytes]:
        """gevent-websocket already sent 101: refuse with close 1008 instead of a status."""
        from .transport import gevent_websocket

        protocol = handshake.open_protocol(options)
        conn_transport = gevent_websocket.take_over(environ, start_response, [])
        protocol.send_close(1008, reason[:120])
        try:
            conn_transport.sendall(b"".join(chunk for chunk in protocol.data_to_send() if chunk))
        except OSError:
            pass
        conn_transport.close()
        return gevent_websocket.finish(environ, conn_transport)


def _check_no_arguments(path: str, cls: type[WS]) -> None:
    """A class route is instantiated with no arguments per connection: fail at mount, not as a 500 later."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # no signature to read (a C-level constructor): nothing to check
        return
    try:
        signature.bind()
    except TypeError as exc:
        raise TypeError(
            f"handler class {cls.__qualname__} for {path!r} is instantiated per connection with no arguments, "
            f"but its constructor needs some ({exc}); mount an instance instead, e.g. {cls.__name__}(...)"
        ) from None
