"""WSGI apps for test_engine_defects.py: one route per engine defect, and what the tests observe.

Served by ``start_server(kind, "tests.defect_apps:<app>")`` (pywsgi or ``gunicorn -k
gevent``). Only the public API of wsmiddleware is used, so that the same file runs
against the old engine and the rewritten one.

HTTP endpoints (reached through the wrapped app):

* ``/events?id=KEY``: what the handlers recorded for the connections opened with
  ``?id=KEY`` (``["open"]``, ``["close", code, reason]``...), as JSON.
* ``/stats``: open file descriptors, live greenlets and open server connections of
  this process (``connections``: ``len(middleware.connections)`` on an engine that has
  it, else ``len(wsmiddleware.connection.live_connections())``).
* ``/close?id=KEY&code=C``: ``websocket.close(C)`` on that connection, from this
  request's greenlet (the connection may be parked).
* ``/write?id=KEY&count=N&size=S[&how=broadcast]``: N binary messages of S bytes to
  that connection, from this request's greenlet, until it is closed.

Apps: ``application`` (every route), ``generator_wrapped`` (behind a generator-based
WSGI middleware), ``debugged`` (behind werkzeug's ``DebuggedApplication``), ``limited``
(``max_connections=2``; with ``WSM_DEFECT_UPSTREAM`` set, the process opens two
client connections of its own to that URL at import).
"""

from __future__ import annotations

import gc
import json
import os
import threading
from urllib.parse import parse_qs

import gevent
import greenlet
import webob

import wsmiddleware
from wsmiddleware import WS, ConnectionClosed, WebSocketMiddleware

#: Server-side observations per client-chosen id, read back through /events.
EVENTS: dict[str, list] = {}
#: Open connections per id, for the HTTP endpoints that act on one.
SOCKETS: dict[str, object] = {}
_lock = threading.Lock()

MiB = 2**20
KiB = 2**10
CHUNK = 64 * KiB


def query(environ) -> dict[str, str]:
    # Leniently: a hostile client may send any bytes in the query.
    parsed = parse_qs(environ.get("QUERY_STRING", ""), errors="replace")
    return {name: values[0] for name, values in parsed.items() if values}


def note(key: str | None, *event) -> None:
    if key:
        with _lock:
            EVENTS.setdefault(key, []).append(list(event))


def key_of(websocket) -> str | None:
    return query(websocket.environ).get("id")


def record(websocket, *event) -> None:
    note(key_of(websocket), *event)


def write_many(websocket, count: int, size: int, how: str = "write") -> int:
    """Write ``count`` binary messages of ``size`` bytes; stop once the connection is closed."""
    payload = b"x" * size
    written = 0
    for _ in range(count):
        if websocket.closed:
            break
        try:
            if how == "broadcast":
                wsmiddleware.broadcast([websocket], payload)
            else:
                websocket.write(payload)
        except ConnectionClosed:
            break
        written += 1
    return written


class Commands(WS):
    """Echoes, records open/close, and obeys a few text commands.

    ``close`` -> close(4000, "bye"); ``boom`` -> raise (1011); ``flood N SIZE`` -> N
    binary messages of SIZE bytes from the reader greenlet.
    """

    def on_open(self, websocket):
        record(websocket, "open")
        key = key_of(websocket)
        if key:
            SOCKETS[key] = websocket

    def on_message(self, websocket, message):
        if message == "close":
            websocket.close(4000, "bye")
        elif message == "boom":
            raise RuntimeError("boom requested by the test")
        elif message.startswith("flood "):
            _, count, size = message.split()
            write_many(websocket, int(count), int(size))
        else:
            websocket.write(message)

    def on_bytes(self, websocket, data):
        websocket.write(data)

    def on_close(self, websocket):
        record(websocket, "close", websocket.close_code, websocket.close_reason)
        key = key_of(websocket)
        if key and SOCKETS.get(key) is websocket:
            del SOCKETS[key]


class Backlog(Commands):
    """On open, writes 8 MiB in 64 KiB messages: a writer with a long backlog to drain."""

    def on_open(self, websocket):
        super().on_open(websocket)
        total = int(query(websocket.environ).get("bytes", 8 * MiB))
        record(websocket, "wrote", write_many(websocket, total // CHUNK, CHUNK))


class Big(Commands):
    """On open, writes ``?bytes=`` (2 MiB by default) in 64 KiB messages, 10 ms apart."""

    def on_open(self, websocket):
        super().on_open(websocket)
        total = int(query(websocket.environ).get("bytes", 2 * MiB))

        def produce():
            written = 0
            for _ in range(total // CHUNK):
                if write_many(websocket, 1, CHUNK) != 1:
                    break
                written += 1
                gevent.sleep(0.01)
            record(websocket, "wrote", written)

        websocket.spawn(produce)


def routes() -> dict:
    return {
        "/ws/echo": (Commands(), {"max_message_size": 64 * MiB}),
        "/ws/backlog": (Backlog(), {"send_queue_limit": 64 * MiB, "compression": None}),
        "/ws/keepalive": (Commands(), {"ping_interval": 0.3, "ping_timeout": 0.3, "close_timeout": 0.5}),
        "/ws/closer": (Commands(), {"close_timeout": 0.5}),
        "/ws/slow": (Commands(), {"send_queue_limit": 64 * KiB, "close_timeout": 0.5, "compression": None}),
        "/ws/pings": (Commands(), {"send_queue_limit": 256 * KiB, "close_timeout": 0.5}),
        "/ws/big": (Big(), {"send_queue_limit": 64 * KiB, "close_timeout": 0.5, "compression": None}),
    }


# -- what the process holds ------------------------------------------------------------


def server_connections(middleware) -> int | None:
    """Open server connections of ``middleware``: its registry, or the old process-wide one."""
    try:
        return len(middleware.connections)
    except (AttributeError, TypeError):
        pass
    try:
        from wsmiddleware.connection import live_connections

        return len(live_connections())
    except Exception:
        return None


def stats(middleware) -> dict:
    gc.collect()
    return {
        "pid": os.getpid(),
        "fds": len(os.listdir("/proc/self/fd")),
        "greenlets": sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead),
        "connections": server_connections(middleware),
        "clients": sum(1 for client in CLIENTS if not client.closed),
    }


def http_app(environ, start_response, middleware):
    path = environ.get("PATH_INFO", "")
    params = query(environ)
    status = 200
    if path == "/events":
        with _lock:
            body = EVENTS.get(params.get("id", ""), [])
    elif path == "/stats":
        body = stats(middleware)
    elif path in ("/close", "/write"):
        websocket = SOCKETS.get(params.get("id", ""))
        if websocket is None:
            status, body = 404, {"error": "no such connection"}
        elif path == "/close":
            websocket.close(int(params.get("code", 4000)), params.get("reason", "closed over HTTP"))
            body = {"ok": True}
        else:
            written = write_many(websocket, int(params.get("count", 1)), int(params.get("size", CHUNK)),
                                 params.get("how", "write"))
            body = {"written": written, "closed": websocket.closed}
    else:
        return webob.Response("defect apps\n", content_type="text/plain")(environ, start_response)
    response = webob.Response(json.dumps(body), status=status, content_type="application/json", charset="utf-8")
    return response(environ, start_response)


def make(**options) -> WebSocketMiddleware:
    holder: dict[str, WebSocketMiddleware] = {}

    def plain(environ, start_response):
        return http_app(environ, start_response, holder["middleware"])

    middleware = holder["middleware"] = WebSocketMiddleware(plain, routes(), **options)
    return middleware


application = make()


# -- behind other WSGI middleware (gunicorn) --------------------------------------------


def _wrapper_key(environ) -> str | None:
    key = query(environ).get("id")
    if key and environ.get("PATH_INFO", "").startswith("/ws/"):
        return f"{key}-wrapper"
    return None


def generator_wrap(app):
    """The commonest shape of WSGI middleware: a generator re-yielding the app's chunks."""

    def wrapped(environ, start_response):
        key = _wrapper_key(environ)
        try:
            # Spelled out as such middleware is (not ``yield from``): the shape the issue names.
            for chunk in app(environ, start_response):  # noqa: UP028
                yield chunk
        except BaseException as exc:
            note(key, "raised", type(exc).__name__)
            raise
        note(key, "ended")

    return wrapped


def call_recorder(app):
    """Records whether the app's call returned or raised (inside DebuggedApplication)."""

    def recorded(environ, start_response):
        key = _wrapper_key(environ)
        try:
            result = app(environ, start_response)
        except BaseException as exc:
            note(key, "raised", type(exc).__name__)
            raise
        note(key, "ended")
        return result

    return recorded


generator_wrapped = generator_wrap(application)

try:
    from werkzeug.debug import DebuggedApplication
except ImportError:  # pragma: no cover - werkzeug comes with flask, a test extra
    debugged = None
else:
    debugged = DebuggedApplication(call_recorder(application), evalex=False)


# -- the process's own client connections -------------------------------------------------

#: Client connections this process opened (``limited`` with WSM_DEFECT_UPSTREAM).
CLIENTS: list = []

limited = make(max_connections=2)


def _open_clients(url: str, count: int) -> None:
    from wsmiddleware.client import connect

    for i in range(count):
        try:
            CLIENTS.append(connect(f"{url}-c{i}", compression=None))
        except Exception as exc:  # reported through /events?id=internal
            note("internal", "error", repr(exc))
    note("internal", "opened", len(CLIENTS))


if os.environ.get("WSM_DEFECT_UPSTREAM"):
    gevent.spawn(_open_clients, os.environ["WSM_DEFECT_UPSTREAM"], 2)
