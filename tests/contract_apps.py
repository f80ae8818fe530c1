"""The app the on_handshake contract tests serve: one handler answering what ``?case=`` names."""

from __future__ import annotations

import json
import logging

import flask
import webob
import webob.exc

from wsmiddleware import WS, HandshakeError, WebSocketMiddleware

# gunicorn configures only its own loggers: give ours a handler and a format that
# names logger and level, as tests/serve.py does for pywsgi (a no-op there).
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def teapot_app(environ, start_response):
    """A plain WSGI callable, no framework."""
    start_response("451 Unavailable For Legal Reasons", [("Content-Type", "text/plain"), ("X-Plain", "yes")])
    return [b"plain wsgi refusal\n"]


def broken_app(environ, start_response):
    raise RuntimeError("broken rejection app")


def switching_app(environ, start_response):
    start_response("101 Switching Protocols", [("Upgrade", "websocket"), ("Connection", "Upgrade")])
    return [b""]


class Denied(Exception):
    """An exception that is also a WSGI app: raising it rejects."""

    def __call__(self, environ, start_response):
        start_response("429 Too Many Requests", [("Content-Type", "text/plain"), ("Retry-After", "7")])
        return [b"slow down\n"]


def _raise(exc: BaseException):
    raise exc


#: ?case= -> what on_handshake does: a callable is called (it may raise), anything else is returned.
CASES = {
    "none": None,
    "offered": "v2.chat",
    "unoffered": "v9.chat",
    "false": False,
    "webob-returned": lambda: webob.exc.HTTPGone("gone for good"),
    "webob-raised": lambda: _raise(webob.exc.HTTPUnauthorized("raised: no entry", headers=[("WWW-Authenticate", "Token")])),
    "webob-response": lambda: webob.Response("plain webob\n", status=409, content_type="text/plain"),
    "flask-abort": lambda: flask.abort(401),
    "flask-response": lambda: flask.Response("no", status=418),
    "wsgi-callable": lambda: teapot_app,
    "callable-raised": lambda: _raise(Denied()),
    "handshake-error": lambda: _raise(HandshakeError("go away", 409)),
    "value-error": lambda: _raise(ValueError("contract boom")),
    "broken-app": lambda: broken_app,
    "switching-app": lambda: switching_app,
    "class": lambda: webob.exc.HTTPForbidden,
    "true": True,
    "int": 403,
    "tuple": ("forbidden", 403),
    "dict": {},
    "empty": "",
}


class ContractHandler(WS):
    """on_handshake answers what the case says; on open, the connection reports itself."""

    subprotocols = ["v1.chat"]

    def on_handshake(self, request):
        answer = CASES[request.GET["case"]]
        return answer() if callable(answer) and not isinstance(answer, type) else answer

    def on_open(self, websocket):
        websocket.write(json.dumps({"subprotocol": websocket.subprotocol, "state": websocket.state}))

    def on_message(self, websocket, message):
        websocket.write(message)


class StateHandler(WS):
    """Hands data from on_handshake to the connection through the documented environ dict."""

    def on_handshake(self, request):
        state = request.environ["wsmiddleware.state"]
        state["user"] = request.GET.get("user", "nobody")
        state["seen_in_handshake"] = ["user"]
        return None

    def on_open(self, websocket):
        websocket.write(json.dumps(websocket.state, sort_keys=True))


class VarsHandler(WS):
    """Refuses unknown rooms from ``request.urlvars``; passes what it saw on to the connection."""

    def on_handshake(self, request):
        if request.urlvars.get("room") != "lobby":
            return webob.exc.HTTPNotFound(f"no room {request.urlvars.get('room')!r}")
        args, named = request.environ["wsgiorg.routing_args"]
        request.environ["wsmiddleware.state"]["routing_args"] = [list(args), dict(named)]
        return None

    def on_open(self, websocket):
        websocket.write(json.dumps(websocket.state["routing_args"], sort_keys=True))


class PerConnection(StateHandler):
    """Mounted as a class: built per connection, still gets the state."""

    def __init__(self, greeting: str = "hi"):
        self.greeting = greeting


ws_app = WebSocketMiddleware(None, {
    "/ws/contract": ContractHandler(),
    "/ws/state": StateHandler(),
    "/ws/perconn": PerConnection,
    "/ws/vars/{room}/{num:int}": VarsHandler(),
})


def application(environ, start_response):
    """Under /outer an outer router has already set routing args, as a URL-map dispatcher would."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/outer/"):
        environ["wsgiorg.routing_args"] = (("outer-positional",), {"tenant": "acme", "room": "outer-room"})
        environ["PATH_INFO"] = path[len("/outer"):]
    return ws_app(environ, start_response)
