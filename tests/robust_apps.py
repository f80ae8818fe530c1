"""Apps for the robustness tests: keepalive, limits, shutdown, leaks, compression, hostile handshakes.

Each module-level app is the same set of routes with different options. ``/debug/counts``
reports what the process holds (file descriptors, greenlets, open WebSockets,
pub/sub subscriptions, memory) so that tests can compare before and after.

Also runnable as a server for the pywsgi variants the shared runner does not cover::

    python -m tests.robust_apps KIND APP PORT [REQUEST_TIMEOUT]

KIND ``wsm``: ``wsmiddleware.server.serve`` (bounded request read, graceful stop);
KIND ``pywsgi-pool``: a plain ``gevent.pywsgi.WSGIServer`` with a pool and *no*
shutdown hook, stopped on SIGTERM with ``stop(timeout=0.5)`` (its connection
greenlets get killed: the ``GreenletExit`` path).
"""

if __name__ == "__main__":  # a server process: patch before anything imports socket
    from gevent import monkey

    monkey.patch_all()

import gc
import json
import os
import resource

import gevent
import webob
from greenlet import greenlet

from tests.apps import EVENTS, _lock
from wsmiddleware import WS, ConnectionTimeout, WebSocketMiddleware
from wsmiddleware._keepalive import ticker
from wsmiddleware.registry import server_connections as live_connections

try:  # the pub/sub package may be absent in a partial checkout
    from wsmiddleware import PubSubWS
    from wsmiddleware.pubsub import MemoryPubSub
except ImportError:  # pragma: no cover
    PubSubWS = MemoryPubSub = None

PUBSUB = MemoryPubSub() if MemoryPubSub is not None else None


def record(websocket, *event) -> None:
    """Note a server-side event under the client's ``?id=``, read back through /events.

    The query is parsed leniently: hostile clients send any bytes there.
    """
    from urllib.parse import parse_qs

    query = parse_qs(websocket.environ.get("QUERY_STRING", ""), errors="replace")
    key = (query.get("id") or [None])[0]
    if key:
        with _lock:
            EVENTS.setdefault(key, []).append(list(event))


class Echo(WS):
    """Echoes; records open and close (with code) under the client's ``?id=``."""

    def on_open(self, websocket):
        record(websocket, "open")

    def on_message(self, websocket, message):
        websocket.write(message)

    def on_bytes(self, websocket, data):
        websocket.write(data)

    def on_close(self, websocket):
        record(websocket, "close", websocket.close_code, websocket.close_reason)


class PingOnRequest(WS):
    """'ping' -> ping the client from a spawned greenlet, report the outcome.

    The waiter is waited on outside the reading greenlet: the pong can only be
    read by it.
    """

    def on_message(self, websocket, message):
        if message.startswith("ping"):
            timeout = float(message.split()[1]) if " " in message else None

            def wait_for_pong():
                waiter = websocket.ping()
                try:
                    rtt = waiter.wait(timeout) if timeout is not None else waiter.wait()
                    websocket.write(f"pong {rtt:.6f}")
                except ConnectionTimeout:
                    websocket.write("timeout")

            websocket.spawn(wait_for_pong)

    def on_close(self, websocket):
        record(websocket, "close", websocket.close_code, websocket.close_reason)


class Pid(WS):
    """Writes the serving process's pid on open: tells whether a worker was replaced."""

    def on_open(self, websocket):
        websocket.write(str(os.getpid()))


def counts() -> dict:
    """What this process holds right now."""
    # Spawned greenlets (connections, writers, timers, keepalive): what could leak. Raw
    # greenlets also include hubs and workers of gevent's own thread pool, which
    # come and go with its threads.
    greenlets = sum(1 for obj in gc.get_objects() if isinstance(obj, gevent.Greenlet) and not obj.dead)
    with open("/proc/self/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    return {
        "pid": os.getpid(),
        "fds": len(os.listdir("/proc/self/fd")),
        "greenlets": greenlets,
        "websockets": len(live_connections()),
        "keepalive": ticker().pending(),
        # The ticker greenlet ends with its last deadline.
        "ticker": ticker().running,
        "subscriptions": PUBSUB.subscription_count() if PUBSUB is not None else None,
        "rss": rss_pages * resource.getpagesize(),
        # Peak resident memory of the process so far, in bytes.
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def debug_app(environ, start_response):
    request = webob.Request(environ)
    # The raw (latin-1) PATH_INFO: hostile tests send paths that are not UTF-8.
    path = environ.get("PATH_INFO", "")
    if path == "/debug/counts":
        if request.GET.get("collect"):
            gc.collect()
            gevent.sleep(0)
        found = counts()
        if request.GET.get("detail"):  # which greenlets, when a count does not add up
            found["greenlet_list"] = [repr(g) for g in gc.get_objects() if isinstance(g, greenlet) and not g.dead]
        body = json.dumps(found)
    elif path == "/events":
        from urllib.parse import parse_qs

        key = (parse_qs(environ.get("QUERY_STRING", "")).get("id") or [""])[0]
        with _lock:
            body = json.dumps(EVENTS.get(key, []))
    else:
        return webob.Response("robust apps\n", content_type="text/plain")(environ, start_response)
    return webob.Response(body, content_type="application/json", charset="utf-8")(environ, start_response)


def make(app=debug_app, **options):
    routes = {
        "/ws/echo": Echo(),
        "/ws/ping": PingOnRequest(),
        "/ws/nocompress": (Echo(), {"compression": None}),
        "/ws/pid": Pid(),
    }
    if PUBSUB is not None:
        routes["/ws/room/{room}"] = PubSubWS(PUBSUB, channel="room:{room}")
    return WebSocketMiddleware(app, routes, **options)


#: Defaults everywhere (1 MiB messages, 20 s / 20 s keepalive, deflate on).
application = make()
#: Keepalive on a short fuse: ping after 0.3 s idle, give up 0.3 s later.
keepalive = make(ping_interval=0.3, ping_timeout=0.3, close_timeout=1.0)
#: At most three WebSockets per process.
limited = make(max_connections=3)
#: A short closing handshake, for shutdown tests.
shutdown = make(close_timeout=2.0)
#: No wrapped app: every answer comes from the middleware (hostile handshake tests).
bare = make(app=None)


# -- client side: what the tests use to drive and observe these servers ---------------


def start(kind: str, app: str = "application", request_timeout: float | None = None, extra=None):
    """Serve ``tests.robust_apps:<app>`` under ``kind``: pywsgi, gunicorn, wsm or pywsgi-pool."""
    from tests.support import PYTHON, ServerProcess, free_port, start_server

    target = f"tests.robust_apps:{app}"
    if kind in ("pywsgi", "gunicorn"):
        return start_server(kind, target, extra=extra)
    port = free_port()
    argv = [PYTHON, "-m", "tests.robust_apps", kind, target, str(port)]
    if request_timeout is not None:
        argv.append(str(request_timeout))
    return ServerProcess(argv, port, name=kind)


def get_json(server, path: str):
    import urllib.request

    with urllib.request.urlopen(f"{server.http}{path}", timeout=5) as response:
        return json.loads(response.read())


def server_counts(server, collect: bool = False) -> dict:
    return get_json(server, "/debug/counts" + ("?collect=1" if collect else ""))


def server_events(server, key: str) -> list:
    return get_json(server, f"/events?id={key}")


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a true value (returned) or ``timeout`` passes (None)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


#: The kinds of connection life a leak check goes through, in turn.
CYCLE_KINDS = (
    "clean", "fin", "rst", "rst-mid-frame", "no-frames", "room-clean", "room-rst", "deflate-fin",
    "rejected", "close-then-rst",
)


def cycle(port: int, index: int) -> str:
    """One connect / echo / disconnect cycle of kind ``CYCLE_KINDS[index % len]``; returns the kind.

    Raw sockets keep the client cheap and let it end connections every way a
    real peer does: a closing handshake, a bare FIN, a reset, a reset in the
    middle of a frame, a handshake that is refused.
    """
    import os
    import socket

    from tests.conformance.rawclient import BINARY, TEXT, RawClient, deflate, encode_frame
    from tests.support import http_request, upgrade_request

    kind = CYCLE_KINDS[index % len(CYCLE_KINDS)]
    if kind == "rejected":
        status, _, _ = http_request(port, upgrade_request("/ws/echo", port, headers={"Sec-WebSocket-Version": "8"}))
        assert status == 426, status
        return kind
    path = f"/ws/room/r{index % 7}" if kind.startswith("room") else "/ws/echo"
    headers = {"Sec-WebSocket-Extensions": "permessage-deflate"} if kind.startswith("deflate") else None
    client = RawClient(port, path, headers=headers)
    try:
        payload = os.urandom(64) if index % 2 else b"x" * 200
        if kind == "no-frames":
            pass
        elif kind.startswith("deflate"):
            client.send(TEXT, deflate(b"compressible " * 50), rsv=4)
            assert client.message() == (TEXT, b"compressible " * 50)
        else:
            client.echo(BINARY, payload)
        if kind in ("clean", "room-clean"):
            client.close_cleanly()
        elif kind in ("rst", "room-rst"):
            client.abort()
        elif kind == "rst-mid-frame":
            client.send_raw(encode_frame(BINARY, payload)[:20])
            client.abort()
        elif kind == "close-then-rst":
            client.send_close(1000)
            client.abort()
        else:
            client.sock.shutdown(socket.SHUT_WR)
    finally:
        client.close()
    return kind


def run_cycles(port: int, count: int, time_limit: float) -> int:
    """Run up to ``count`` cycles, at most ``time_limit`` seconds; return how many ran."""
    import time

    deadline = time.monotonic() + time_limit
    done = 0
    while done < count and time.monotonic() < deadline:
        cycle(port, done)
        done += 1
    return done


def settled(server, timeout: float = 10.0) -> dict:
    """The server's counts once it is idle and they have stopped moving.

    Idle: no WebSocket open or registered for keepalive, no subscription, no
    keepalive ticker still sleeping. Stable: three readings in a row agree on
    file descriptors and greenlets (connection greenlets finish just after their
    sockets close). Gives up after ``timeout`` seconds and returns the last reading.
    """
    readings: list[dict] = []

    def check():
        now = server_counts(server, collect=True)
        idle = not (now["websockets"] or now["keepalive"] or now["subscriptions"] or now["ticker"])
        readings[:] = (readings + [now])[-3:] if idle else []
        stable = len(readings) == 3 and len({(r["fds"], r["greenlets"]) for r in readings}) == 1
        return now if stable else None

    return wait_until(check, timeout=timeout, interval=0.1) or server_counts(server, collect=True)


def _serve(kind: str, target: str, port: int, request_timeout: float | None) -> None:
    import importlib
    import logging
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    module_name, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module_name), attr or "application")
    if kind == "wsm":
        from wsmiddleware.server import serve

        serve(app, "127.0.0.1", port, request_timeout=request_timeout)
        return
    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer

    server = WSGIServer(("127.0.0.1", port), app, spawn=Pool())
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(server.stop, timeout=0.5))
    server.serve_forever()


if __name__ == "__main__":
    import sys

    _serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else None)
