"""The WSGI application the end-to-end tests serve, with one route per behaviour."""

from __future__ import annotations

import json
import os
import threading

import webob
import webob.exc

from wsmiddleware import WS, ConnectionTimeout, WebSocketMiddleware

#: Server-side observations, per client-chosen id, read back through /events.
EVENTS: dict[str, list] = {}
_lock = threading.Lock()


def record(websocket, *event) -> None:
    key = websocket.request.GET.get("id") if websocket.request is not None else None
    if key:
        with _lock:
            EVENTS.setdefault(key, []).append(list(event))


class Echo(WS):
    def on_message(self, websocket, message):
        websocket.write(message)

    def on_bytes(self, websocket, data):
        websocket.write(data)

    def on_close(self, websocket):
        record(websocket, "close", websocket.close_code, websocket.close_reason)


class Recorder(Echo):
    """Echoes and records every callback with its arguments."""

    def on_open(self, websocket):
        record(websocket, "open")

    def on_message(self, websocket, message):
        record(websocket, "message", message)
        if message == "close-me":
            websocket.close(4001, "asked to")
            return
        websocket.write(message)

    def on_bytes(self, websocket, data):
        record(websocket, "bytes", len(data))
        websocket.write(data)

    def on_ping(self, websocket, payload):
        record(websocket, "ping", payload.decode("latin-1"))
        super().on_ping(websocket, payload)

    def on_pong(self, websocket, payload):
        record(websocket, "pong", payload.decode("latin-1"))


class Raiser(Echo):
    def on_message(self, websocket, message):
        if message == "boom":
            raise RuntimeError("boom requested by the test")
        websocket.write(message)


class Info(WS):
    """Writes what the connection knows about itself as JSON, on open."""

    subprotocols = ["v2.chat", "v1.chat"]

    def on_open(self, websocket):
        websocket.state["opened"] = True
        websocket.write(json.dumps({
            "path": websocket.path,
            "url_vars": {k: [type(v).__name__, str(v)] for k, v in websocket.url_vars.items()},
            "subprotocol": websocket.subprotocol,
            "remote_addr": websocket.remote_addr,
            "script_name": websocket.environ.get("SCRIPT_NAME", ""),
            "path_info": websocket.environ.get("PATH_INFO", ""),
            "request_path": websocket.request.path,
            "state": websocket.state,
            "pid": os.getpid(),
        }))


class Guarded(Echo):
    """on_handshake rejects without the right token, or picks a subprotocol."""

    def on_handshake(self, request):
        token = request.GET.get("token")
        if token == "raise":
            raise webob.exc.HTTPForbidden("raised: no entry")
        if token != "s3cret":
            return webob.exc.HTTPUnauthorized(
                "token required", headers=[("WWW-Authenticate", "Token"), ("X-Reason", "no-token")]
            )
        if "custom" in request.headers.get("Sec-WebSocket-Protocol", ""):
            return "custom"
        return None


class Counter(WS):
    """Mounted as a class: each connection has its own instance and count."""

    def __init__(self):
        self.count = 0

    def on_message(self, websocket, message):
        self.count += 1
        websocket.write(str(self.count))


class Pinger(WS):
    """'ping' -> ping the client and report the pong's round trip."""

    def on_message(self, websocket, message):
        if message == "ping":
            waiter = websocket.ping()
            websocket.spawn(self.report, websocket, waiter)
        elif message == "wait-inline":
            try:
                websocket.ping().wait(1.0)
            except RuntimeError as exc:
                websocket.write(f"refused: {exc}")

    def report(self, websocket, waiter):
        try:
            rtt = waiter.wait(2.0)
            websocket.write(f"pong after {rtt:.6f}")
        except ConnectionTimeout:
            websocket.write("ping timeout")


class Producer(WS):
    """Spawns a producer greenlet writing 'tick N' until the connection ends."""

    def on_open(self, websocket):
        def produce():
            import gevent

            for i in range(1000):
                websocket.write(f"tick {i}")
                gevent.sleep(0.01)

        websocket.spawn(produce)

    def on_close(self, websocket):
        record(websocket, "close", websocket.close_code, websocket.close_reason)


class Closer(WS):
    def on_open(self, websocket):
        code = int(websocket.request.GET.get("code", "1000"))
        websocket.close(code, websocket.request.GET.get("reason", ""))


class CrossWriter(WS):
    """Writes from a different greenlet than the reader's, many at once."""

    def on_message(self, websocket, message):
        import gevent

        count = int(message)
        greenlets = [gevent.spawn(websocket.write, f"{i}") for i in range(count)]
        gevent.joinall(greenlets)
        websocket.write("done")


def plain_app(environ, start_response):
    request = webob.Request(environ)
    if request.path_info == "/events":
        with _lock:
            body = json.dumps(EVENTS.get(request.GET.get("id", ""), []))
        return webob.Response(body.encode(), content_type="application/json")(environ, start_response)
    text = f"plain app: {request.method} {request.script_name}|{request.path_info} upgrade={request.headers.get('Upgrade')}"
    return webob.Response(text.encode(), content_type="text/plain")(environ, start_response)


def make_application(app=plain_app, **options):
    middleware = WebSocketMiddleware(app, {
        "/ws/echo": Echo(),
        "/ws/record": Recorder(),
        "/ws/raise": Raiser(),
        "/ws/info/{room}/{num:int}": Info(),
        "/ws/info": Info(),
        "/ws/guarded": Guarded(),
        "/ws/counter": Counter,
        "/ws/ping": Pinger(),
        "/ws/produce": Producer(),
        "/ws/closer": Closer(),
        "/ws/cross": CrossWriter(),
        "/ws/small": (Echo(), {"max_message_size": 1000}),
        "/ws/anyorigin": (Echo(), {"allowed_origins": ["*"]}),
        "/ws/listed": (Echo(), {"allowed_origins": ["https://good.example"]}),
    }, **options)
    middleware.mount("/ws/nocompress", Echo(), compression=None)
    return middleware


application = make_application()
bare = make_application(app=None)


def mounted(environ, start_response):
    """The whole app mounted under /prefix, as a URL-map dispatcher would do."""
    request = webob.Request(environ)
    if request.path_info.startswith("/prefix/") or request.path_info == "/prefix":
        request.path_info_pop()
        return application(request.environ, start_response)
    return webob.exc.HTTPNotFound()(environ, start_response)
