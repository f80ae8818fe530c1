"""``WebSocketMiddleware``: route upgrade requests to handlers, pass the rest through."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import webob
import webob.exc

from . import handshake, shutdown, transport
from .connection import _LIVE, WebSocket
from .exceptions import HandshakeError
from .handler import WS
from .options import Options
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
    """

    def __init__(
        self,
        app: WSGIApp | None = None,
        routes: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.options = Options().merged(options)
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
        return self.router.add(path, handler, {"options": self.options.merged(options)})

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
            kind = transport.detect(environ)
        except transport.TransportUnavailable as exc:
            logger.error("cannot serve WebSocket on %s: %s", environ.get("PATH_INFO"), exc)
            return self._plain(501, str(exc))(environ, start_response)
        already_upgraded = kind == "gevent-websocket"
        request = webob.Request(environ)
        try:
            key = "" if already_upgraded else handshake.validate(request)
            handshake.check_origin(request, options.allowed_origins)
            shutdown.admit()
            if options.max_connections is not None and len(_LIVE) >= options.max_connections:
                raise HandshakeError("too many WebSocket connections, try again later", 503, [("Retry-After", "5")])
            handler = route.handler() if isinstance(route.handler, type) else route.handler
            answer = handler.on_handshake(request)
        except HandshakeError as exc:
            # PATH_INFO as the server gave it: request.path would decode it, and any bytes may come.
            logger.info("rejected WebSocket handshake for %r: %s", environ.get("PATH_INFO"), exc.reason)
            if already_upgraded:
                return self._refuse_upgraded(environ, start_response, options, exc.reason)
            return handshake.rejection(exc)(environ, start_response)
        except webob.exc.HTTPException as exc:
            answer = exc
        if isinstance(answer, webob.Response) or isinstance(answer, webob.exc.HTTPException):
            if already_upgraded:
                return self._refuse_upgraded(environ, start_response, options, str(answer.status))
            return answer(environ, start_response)
        if isinstance(answer, str):
            subprotocol: str | None = answer
            if subprotocol not in handshake.offered_subprotocols(request):
                logger.warning("on_handshake chose subprotocol %r, which the client did not offer", subprotocol)
                subprotocol = None
        else:
            subprotocol = handshake.select_subprotocol(request, handler.subprotocols)
        if already_upgraded:
            # Its handler negotiated no extension and no subprotocol.
            subprotocol = getattr(environ["wsgi.websocket"], "protocol", None) or None
            accepted = handshake.Accepted([], handshake.open_protocol(options), subprotocol)
        else:
            try:
                accepted = handshake.accept(request, key, options, subprotocol)
            except HandshakeError as exc:
                return handshake.rejection(exc)(environ, start_response)
        conn_transport = transport.take_over(kind, environ, start_response, accepted.headers)
        websocket = WebSocket(
            conn_transport,
            accepted.protocol,
            handler,
            options,
            environ=environ,
            url_vars=url_vars,
            subprotocol=accepted.subprotocol,
        )
        # This frame lasts as long as the connection: what only the handshake
        # needed goes now (websocket.request rebuilds the Request on demand).
        del request, accepted, key, answer
        websocket.run()
        return conn_transport.finish()

    def _refuse_upgraded(
        self, environ: dict[str, Any], start_response: Callable[..., Any], options: Options, reason: str
    ) -> Iterable[bytes]:
        """gevent-websocket already sent 101: refuse with close 1008 instead of a status."""
        protocol = handshake.open_protocol(options)
        conn_transport = transport.take_over("gevent-websocket", environ, start_response, [])
        protocol.send_close(1008, reason[:120])
        try:
            conn_transport.sendall(b"".join(protocol.data_to_send()))
        except OSError:
            pass
        return conn_transport.finish()


