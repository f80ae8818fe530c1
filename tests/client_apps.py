"""Server-side apps for the client, test-client and message-routing tests.

Served as a child process (``python -m tests.client_apps --port P [--certfile C --keyfile K]``)
for the client and routing tests, and in-process by ``TestClient`` in test_testing.py.
"""

from __future__ import annotations

import argparse
import json

import webob
import webob.exc

from wsmiddleware import WS, ConnectionTimeout, WebSocketMiddleware
from wsmiddleware.rpc import MessageError, MessageRouter, on


class Echo(WS):
    def on_message(self, websocket, message):
        websocket.write(message)

    def on_bytes(self, websocket, data):
        websocket.write(data)


class Burst(WS):
    """'N' -> N messages '0'..'N-1' then 'done'; 'close N' -> N messages then close 1000."""

    def on_message(self, websocket, message):
        if message.startswith("close "):
            for i in range(int(message.split()[1])):
                websocket.write(str(i))
            websocket.close(1000, "burst over")
            return
        for i in range(int(message)):
            websocket.write(str(i))
        websocket.write("done")


class Headers(WS):
    """On open: the request's headers, query and subprotocol, as JSON."""

    subprotocols = ["v2.chat", "v1.chat"]

    def on_open(self, websocket):
        websocket.write(json.dumps({
            "headers": dict(websocket.request.headers),
            "query": dict(websocket.request.GET),
            "subprotocol": websocket.subprotocol,
        }))


class PingsClient(WS):
    """On 'ping': pings the client and reports whether the pong came within 0.5 s."""

    def on_message(self, websocket, message):
        waiter = websocket.ping()

        def report():
            # Waited outside the callback: the pong is read by the callback's own greenlet.
            try:
                waiter.wait(0.5)
                websocket.write("pong received")
            except ConnectionTimeout:
                websocket.write("no pong")

        websocket.spawn(report)


class Calculator(MessageRouter):
    """A message router exercising every reply shape."""

    def on_open(self, websocket):
        self.emit(websocket, "welcome", types=self.message_types())

    @on("add")
    def add(self, websocket, message):
        return message["a"] + message["b"]

    @on("echo", "repeat")
    def echo(self, websocket, message):
        return message.get("payload")

    @on("notify")
    def notify(self, websocket, message):
        self.emit(websocket, "notified", text=message.get("text"))

    @on("divide")
    def divide(self, websocket, message):
        if message.get("b") == 0:
            raise MessageError("cannot divide by zero", code="division_by_zero", data={"a": message.get("a")})
        return message["a"] / message["b"]

    @on("crash")
    def crash(self, websocket, message):
        raise RuntimeError("handler bug requested by the test")

    @on("unserialisable")
    def unserialisable(self, websocket, message):
        return {1, 2, 3}

    @on("sleep")
    def sleep(self, websocket, message):
        import gevent

        gevent.sleep(float(message.get("seconds", 0.05)))
        return "slept"


class ExtendedCalculator(Calculator):
    """Inherits the routes and overrides one."""

    @on("add")
    def add_strings(self, websocket, message):
        return f"{message['a']}{message['b']}"

    @on("mul")
    def mul(self, websocket, message):
        return message["a"] * message["b"]


class Guarded(Echo):
    """Accepts only with ?token=s3cret; answers 401 with a header and a body otherwise."""

    def on_handshake(self, request):
        if request.GET.get("token") != "s3cret":
            return webob.Response(
                "token required\n", status=401, content_type="text/plain",
                headers=[("WWW-Authenticate", "Token"), ("X-Reason", "no-token")],
            )
        return None


def plain_app(environ, start_response):
    request = webob.Request(environ)
    if request.path_info == "/login":
        response = webob.Response("logged in\n", content_type="text/plain")
        response.set_cookie("user", request.params.get("name", "anon"))
        return response(environ, start_response)
    if request.path_info == "/logout":
        response = webob.Response("logged out\n", content_type="text/plain")
        response.delete_cookie("user")
        return response(environ, start_response)
    if request.path_info == "/json":
        body = {"method": request.method, "json": request.json_body if request.body else None,
                "user": request.cookies.get("user")}
        return webob.Response(json=body)(environ, start_response)
    if request.path_info == "/form":
        return webob.Response(json={"form": dict(request.POST), "query": dict(request.GET)})(environ, start_response)
    if request.path_info == "/boom":
        raise RuntimeError("plain app failure")
    text = f"plain: {request.method} {request.path_info} user={request.cookies.get('user')}"
    return webob.Response(text, content_type="text/plain")(environ, start_response)


class WhoAmI(WS):
    """Rejects connections without the 'user' cookie set by /login; greets the user."""

    def on_handshake(self, request):
        if "user" not in request.cookies:
            return webob.exc.HTTPForbidden("log in first")
        return None

    def on_open(self, websocket):
        websocket.write(f"hello {websocket.request.cookies['user']}")


def make_application():
    return WebSocketMiddleware(plain_app, {
        "/ws/echo": Echo(),
        "/ws/echo/{room}": Echo(),
        "/ws/burst": Burst(),
        "/ws/headers": Headers(),
        "/ws/pings": PingsClient(),
        "/ws/rpc": Calculator(),
        "/ws/rpc2": ExtendedCalculator,
        "/ws/guarded": Guarded(),
        "/ws/whoami": WhoAmI(),
        "/ws/small": (Echo(), {"max_message_size": 1000}),
    })


application = make_application()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()

    from gevent import monkey

    monkey.patch_all()
    import logging
    import signal

    import gevent
    from gevent.pywsgi import WSGIServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tls = {"certfile": args.certfile, "keyfile": args.keyfile} if args.certfile else {}
    server = WSGIServer(("127.0.0.1", args.port), application, **tls)
    gevent.signal_handler(signal.SIGTERM, lambda: server.stop(timeout=5))
    server.serve_forever()


if __name__ == "__main__":
    main()
