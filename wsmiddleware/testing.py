"""``TestClient``: exercise a WSGI + WebSocket application from a test, in-process.

WebSocket connections go through a real ``gevent.pywsgi`` server that the
client starts on an ephemeral loopback port inside the test process, so the
application runs its real handshake, transport and connection code; the port
is picked and released for you. Plain HTTP requests are handed to the WSGI
application directly (as WebTest does) and come back as ``webob.Response``.
Cookies set by those responses are sent with later requests and connections,
so a test can log in over HTTP and then open an authenticated WebSocket.

Requirement: the server runs in the calling thread's gevent hub, so it serves
while the test waits in gevent: ``ws.receive(timeout=...)``,
``ws.wait_closed()``, ``gevent.sleep()``, or any I/O once gevent's
monkey-patching is on. The test process does not need to be monkey-patched,
but in one that is not, a plain ``time.sleep()`` or blocking socket call in the
test body stalls the server meanwhile. Use a client from one thread.
"""

from __future__ import annotations

import json as _json
import logging
import weakref
from collections.abc import Mapping, Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlencode

import gevent.pool
import webob
from gevent.pywsgi import WSGIServer

from .client import ClientConnection, connect
from .handler import WS

__all__ = ["TestClient"]

logger = logging.getLogger("wsmiddleware.testing")


def _stop_server(server: WSGIServer) -> None:
    # Called when the TestClient is garbage collected: stop listening without waiting.
    try:
        server.close()
    except Exception:  # pragma: no cover - the hub may already be gone at exit
        pass


class TestClient:
    """Drive ``application`` from a test: ``connect(path)`` for WebSocket, ``get``/``post``... for HTTP.

    ``with TestClient(app) as client:`` stops the server and closes every
    connection on the way out; without ``with``, call :meth:`close` (or let the
    client be garbage collected, which stops the listener).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, application: Any, *, host: str = "127.0.0.1") -> None:
        self.application = application
        self.host = host
        #: Cookies the application set, sent back with every request and connection.
        self.cookies: dict[str, str] = {}
        self._server: WSGIServer | None = None
        self._connections: weakref.WeakSet[ClientConnection] = weakref.WeakSet()
        self._finalizer: weakref.finalize | None = None

    # -- the in-process server --------------------------------------------------

    @property
    def port(self) -> int:
        """The loopback port of the in-process server (started on first use)."""
        return self._ensure_server().server_port

    @property
    def url(self) -> str:
        """``ws://host:port`` of the in-process server."""
        return f"ws://{self.host}:{self.port}"

    def _ensure_server(self) -> WSGIServer:
        if self._server is None:
            # A pool lets close() stop handlers still running (open WebSockets).
            server = WSGIServer((self.host, 0), self.application, spawn=gevent.pool.Pool(), log=None, error_log=logger)
            server.start()
            self._server = server
            self._finalizer = weakref.finalize(self, _stop_server, server)
        return self._server

    def close(self, timeout: float = 2.0) -> None:
        """Close the connections this client opened, then stop the server."""
        for connection in list(self._connections):
            connection.close(1001, "test client closing")
        for connection in list(self._connections):
            connection.wait_closed(timeout)
        if self._server is not None:
            if self._finalizer is not None:
                self._finalizer.detach()
            self._server.stop(timeout=timeout)
            self._server = None

    def __enter__(self) -> TestClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- WebSocket ----------------------------------------------------------------

    def connect(
        self,
        path: str,
        handler: WS | type[WS] | None = None,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        open_timeout: float | None = 5.0,
        **options: Any,
    ) -> ClientConnection:
        """Open a WebSocket to ``path`` (``"/ws/chat/lobby?x=1"``); see :func:`wsmiddleware.client.connect`.

        The result is a context manager; ``receive(timeout=...)`` reads from it.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        if self.cookies and not any(name.lower() == "cookie" for name, _ in items):
            items.append(("Cookie", self._cookie_header()))
        connection = connect(self.url + path, handler, headers=items, open_timeout=open_timeout, **options)
        self._connections.add(connection)
        return connection

    # -- HTTP -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | bytes | str | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> webob.Response:
        """Call the WSGI application with one HTTP request and return its response.

        ``data`` as a mapping is sent form-encoded; ``json`` as a JSON body.
        Exceptions the application raises propagate to the test.
        """
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params, doseq=True)
        request = webob.Request.blank(path, method=method.upper())
        request.remote_addr = "127.0.0.1"
        if json is not None:
            request.body = _json.dumps(json).encode("utf-8")
            request.content_type = "application/json"
        elif isinstance(data, Mapping):
            request.body = urlencode(data, doseq=True).encode("utf-8")
            request.content_type = "application/x-www-form-urlencoded"
        elif data is not None:
            request.body = data.encode("utf-8") if isinstance(data, str) else data
        for name, value in (headers or {}).items():
            request.headers[name] = value
        if self.cookies and "Cookie" not in request.headers:
            request.headers["Cookie"] = self._cookie_header()
        response = request.get_response(self.application)
        self._store_cookies(response)
        return response

    def get(self, path: str, **kwargs: Any) -> webob.Response:
        """``request("GET", path, ...)``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> webob.Response:
        """``request("POST", path, ...)``."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> webob.Response:
        """``request("PUT", path, ...)``."""
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> webob.Response:
        """``request("DELETE", path, ...)``."""
        return self.request("DELETE", path, **kwargs)

    # -- cookies ------------------------------------------------------------------------

    def _cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def _store_cookies(self, response: webob.Response) -> None:
        for header in response.headers.getall("Set-Cookie"):
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(header)
            except CookieError:
                logger.warning("ignoring unparsable Set-Cookie header %r", header)
                continue
            for name, morsel in jar.items():
                max_age = morsel["max-age"]
                if (max_age and max_age.strip().lstrip("-").isdigit() and int(max_age) <= 0) or (
                    morsel["expires"] and "1970" in morsel["expires"]
                ):
                    self.cookies.pop(name, None)
                else:
                    # Keep the raw value: the application quotes and decodes it itself.
                    self.cookies[name] = morsel.coded_value
