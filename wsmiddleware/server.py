"""A ``gevent.pywsgi`` server set up for WebSocket traffic in production.

Plain ``gevent.pywsgi.WSGIServer`` has two gaps for long-lived connections:

* it waits forever for a request head, so a client that connects and never
  finishes its request holds a socket and a greenlet for good (slowloris);
* its ``stop()`` knows nothing of WebSockets: they are cut (or, with the default
  spawn, left running) instead of being closed with 1001.

:class:`WSGIServer` closes both: request heads must arrive within
``request_timeout`` seconds (the idle time between keep-alive requests counts
too), and ``stop()`` runs :func:`wsmiddleware.shutdown.close_all` first.
gunicorn's gevent worker needs none of this: its ``--keep-alive`` bounds the
request read, and the shutdown hook installs itself.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import gevent
from gevent import pywsgi
from gevent.pool import Pool

from . import shutdown

__all__ = ["WSGIServer", "RequestHandler", "serve", "main"]

logger = logging.getLogger("wsmiddleware.server")


class _HeadTimeout(Exception):
    """Raised into a handler whose client is too slow to send its request head."""


class RequestTimeout(ValueError):
    """The request head did not arrive in time (answered with 408)."""


_TIMEOUT_BODY = b"request head not received in time\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class RequestHandler(pywsgi.WSGIHandler):
    """``WSGIHandler`` whose request line and headers must arrive within ``server.request_timeout``."""

    _head_timer: gevent.Timeout | None = None

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            self._stop_head_timer()

    def read_requestline(self) -> str:
        timeout = getattr(self.server, "request_timeout", None)
        if timeout:
            self._head_timer = gevent.Timeout.start_new(timeout, _HeadTimeout)
        try:
            return super().read_requestline()
        except _HeadTimeout:
            # Nothing (or half a line) came: an idle keep-alive connection or a
            # slow client. pywsgi closes the connection quietly on a socket error.
            logger.debug("%s: no request line within %s s, closing", self.client_address, timeout)
            raise TimeoutError("no request line in time") from None

    def read_request(self, raw_requestline: str) -> bool:
        try:
            return super().read_request(raw_requestline)
        except _HeadTimeout:
            logger.info("%s: request headers not received within %s s, closing", self.client_address,
                        getattr(self.server, "request_timeout", None))
            raise RequestTimeout("request head not received in time") from None
        finally:
            self._stop_head_timer()

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, RequestTimeout):
            return ("408", _TIMEOUT_RESPONSE)
        return super()._handle_client_error(ex)

    def _stop_head_timer(self) -> None:
        timer, self._head_timer = self._head_timer, None
        if timer is not None:
            timer.close()


class WSGIServer(pywsgi.WSGIServer):
    """``gevent.pywsgi.WSGIServer`` with a bounded request read and a graceful ``stop()``.

    ``request_timeout`` (seconds, default 10; ``None`` turns it off) bounds how long
    a request head may take. ``stop(timeout)`` stops accepting, closes every
    WebSocket with 1001 and waits up to their ``close_timeout``, then waits up to
    ``timeout`` for the remaining requests before killing them. Handlers run in
    a pool by default so that ``stop()`` can wait for them.
    """

    handler_class = RequestHandler

    def __init__(self, listener: Any, application: Any = None, *, request_timeout: float | None = 10.0,
                 **kwargs: Any) -> None:
        kwargs.setdefault("spawn", Pool())
        super().__init__(listener, application, **kwargs)
        self.request_timeout = request_timeout
        shutdown.install(self)


def serve(application: Any, host: str = "127.0.0.1", port: int = 8000, *, stop_timeout: float = 10.0,
          **kwargs: Any) -> None:
    """Serve ``application`` until SIGTERM or SIGINT, then stop gracefully.

    Call ``gevent.monkey.patch_all()`` at the top of your entry script, before
    importing anything else. ``kwargs`` go to :class:`WSGIServer`.
    """
    server = WSGIServer((host, port), application, **kwargs)

    def stop() -> None:
        # serve_forever() returns through server.stop(), which closes the WebSockets.
        logger.info("stopping the server on %s:%s", host, port)
        server.close()

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop)
    server.serve_forever(stop_timeout=stop_timeout)


def main(application: Any, argv: list[str] | None = None, *, description: str | None = None,
         label: str = "app") -> None:
    """Command-line entry point: ``[--host H] [--port P]`` (default 127.0.0.1:8000), then :func:`serve`.

    For scripts such as the examples: ``if __name__ == "__main__": main(application)``.
    It monkey-patches the standard library for gevent and sets up INFO logging.
    """
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    args = parser.parse_args(argv)

    from gevent import monkey

    monkey.patch_all()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("wsmiddleware").info("%s on http://%s:%d/", label, args.host, args.port)
    serve(application, args.host, args.port)
