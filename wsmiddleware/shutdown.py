"""Graceful shutdown: every open WebSocket of the process gets close 1001.

Neither gevent.pywsgi nor gunicorn knows that a request is a long-lived WebSocket:
on a graceful stop they wait for "the request" to end, then kill it. This module
closes the connections first, with 1001 ("going away"), so that clients learn
why and can reconnect elsewhere, and gives each closing handshake up to its
``close_timeout``.

* gunicorn (``-k gevent`` or ``-k gevent_pywsgi``): nothing to do. When the first
  WebSocket opens in a worker, :func:`admit` chains the worker's SIGTERM (graceful
  stop, also what the master sends on its own SIGTERM: the worker stops once the
  connections have closed) and SIGQUIT/SIGINT (quick stop) handlers with
  :func:`close_all`.
* gevent.pywsgi: call :func:`install` on the server (``wsmiddleware.server.WSGIServer``
  does it for you); its ``stop()`` then closes the WebSockets before stopping.
* Any server that kills the connection greenlet (``GreenletExit``) still gets a
  1001 sent from the connection itself, as a last resort.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, TypeVar

import gevent

from .exceptions import HandshakeError
from .registry import server_connections

__all__ = ["close_all", "install", "admit", "shutting_down"]

logger = logging.getLogger("wsmiddleware.shutdown")

#: Close code of a server going away (RFC 6455 section 7.4.1).
GOING_AWAY = 1001
REASON = "server shutting down"

_state: dict[str, Any] = {"shutting_down": False, "hooked_pid": None}

ServerT = TypeVar("ServerT")


def shutting_down() -> bool:
    """Whether this process has started closing its WebSockets for good."""
    return bool(_state["shutting_down"])


def _connections(server: Any) -> set[Any]:
    if server is None:
        return server_connections()
    # A connection whose server is unknown (start_response wrapped by a middleware) counts as this one's.
    return server_connections(server, None)


def close_all(code: int = GOING_AWAY, reason: str = REASON, timeout: float | None = None,
              server: Any = None) -> int:
    """Close the open server WebSockets of this process with ``code``; return how many.

    With ``server``, only those that came through it. Client connections the
    process opened are left alone. Waits until they have all ended, at most
    ``timeout`` seconds (default: the longest ``close_timeout`` among them; 0
    returns at once). New WebSocket handshakes are refused with 503 from now on.
    """
    _state["shutting_down"] = True
    connections = _connections(server)
    if not connections:
        return 0
    logger.info("closing %d WebSocket connection(s) with %d", len(connections), code)
    for websocket in connections:
        try:
            websocket.close(code, reason)
        except Exception:  # one broken connection must not keep the others open
            logger.exception("could not close %r", websocket)
    if timeout is None:
        timeout = max(websocket.options.close_timeout for websocket in connections)
    if timeout > 0:
        with gevent.Timeout(timeout, False):
            while connections & _connections(server):
                gevent.sleep(0.02)
        left = connections & _connections(server)
        if left:
            logger.warning("%d WebSocket connection(s) did not finish closing within %s s", len(left), timeout)
    return len(connections)


def install(server: ServerT, code: int = GOING_AWAY, reason: str = REASON) -> ServerT:
    """Make a gevent server's ``stop()`` close its WebSockets with ``code`` first.

    Use it on a ``gevent.pywsgi.WSGIServer`` (or any gevent ``BaseServer``)::

        server = shutdown.install(WSGIServer(("0.0.0.0", 8000), application))
        gevent.signal_handler(signal.SIGTERM, server.stop)
        server.serve_forever()

    ``stop()`` then stops accepting, sends close ``code`` to every open WebSocket,
    waits up to their ``close_timeout`` for the closing handshakes, and only then
    runs the server's own stop (which waits for, then kills, what is left).
    """
    original_stop = server.stop  # type: ignore[attr-defined]

    def stop(timeout: float | None = None) -> None:
        if not server.closed:  # type: ignore[attr-defined]
            server.close()  # type: ignore[attr-defined]
        close_all(code, reason, server=server)
        try:
            original_stop(timeout)
        finally:
            # This server is gone, not the process: a server started later in it
            # (a test suite, an embedding app) must accept handshakes again.
            _state["shutting_down"] = False

    server.stop = stop  # type: ignore[attr-defined]
    return server


def admit() -> None:
    """Called for each WebSocket handshake: refuse it during shutdown, hook gunicorn once."""
    if _state["shutting_down"]:
        raise HandshakeError("server shutting down, try again later", 503, [("Retry-After", "5")])
    pid = os.getpid()
    if _state["hooked_pid"] != pid:
        _state["hooked_pid"] = pid
        _hook_gunicorn_worker()


def _gunicorn_worker_of(handler: Any) -> Any:
    """The gunicorn worker whose bound method ``handler`` is (its SIGTERM handler).

    No documented hook reaches a worker's SIGTERM or its ``max_requests`` stop
    without the user's own config file; the installed signal handler is the
    worker's bound ``handle_exit`` (checked on gunicorn 23.0 - 27.0).
    """
    try:
        from gunicorn.workers.base import Worker
    except Exception:  # gunicorn is an optional extra
        return None
    owner = getattr(handler, "__self__", None)
    return owner if isinstance(owner, Worker) else None


def _close_all_then(previous: Any, sig: int, frame: Any) -> None:
    try:
        close_all(GOING_AWAY, REASON)
    finally:
        previous(sig, frame)


#: How often the watch on a gunicorn worker looks whether it is stopping.
WORKER_WATCH_S = 0.5


def _watch_worker(worker: Any) -> None:
    """Close the WebSockets once the worker stops serving without a signal.

    A worker recycled by ``max_requests`` (or stopping for any other reason)
    clears its documented ``alive`` flag and waits ``graceful_timeout`` for its
    requests: the WebSockets among them get 1001 now instead of being cut then.
    """
    while getattr(worker, "alive", False):
        gevent.sleep(WORKER_WATCH_S)
    if not _state["shutting_down"]:
        logger.info("gunicorn worker %s is stopping", os.getpid())
        close_all(GOING_AWAY, REASON)


def _hook_gunicorn_worker() -> None:
    """Chain a gunicorn worker's stop signals with close_all, if this is one."""
    watched = False
    for signum, wait in ((signal.SIGTERM, None), (signal.SIGQUIT, 0.0), (signal.SIGINT, 0.0)):
        try:
            previous = signal.getsignal(signum)
        except ValueError:  # not the main thread: not a gunicorn worker either
            return
        worker = _gunicorn_worker_of(previous)
        if worker is None:
            continue
        if not watched:
            watched = True
            gevent.spawn(_watch_worker, worker)

        def handler(sig: int, frame: Any, previous: Any = previous, wait: float | None = wait) -> None:
            # Signal handlers must not block: the closing runs in its own greenlet.
            # On SIGTERM the worker stops only once the closing handshakes are done
            # (at most close_timeout): it would not wait for parked connections,
            # which hold no request of its pool. On SIGQUIT/SIGINT it exits at
            # once, so the frames just go out.
            if wait is None:
                gevent.spawn(_close_all_then, previous, sig, frame)
            else:
                gevent.spawn(close_all, GOING_AWAY, REASON, wait)
                previous(sig, frame)

        try:
            signal.signal(signum, handler)
        except ValueError:
            return
        logger.debug("chained gunicorn worker's %s handler", signal.Signals(signum).name)
