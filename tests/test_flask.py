"""``wsmiddleware.flask`` end to end: tests/flask_apps.py (Flask-Login, Flask-SQLAlchemy) under real servers.

The handshake runs as a Flask view (request context, before_request, error
handlers, after_request on refusals); callbacks run in an app context of their
own, whose teardown removes Flask-SQLAlchemy's session; options come from
``app.config``. The in-process tests at the end cover the extension pattern
(app factories, several apps, late routes) and configuration errors.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import uuid

import pytest
from flask import Flask, current_app, g, request, session
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from wsmiddleware import WS, ConnectionRejected, WebSocketMiddleware
from wsmiddleware.flask import FlaskIntegration, WebSockets
from wsmiddleware.testing import TestClient

from .conftest import wait_events
from .support import PYTHON, ROOT, ServerProcess, read_http_response, start_server, upgrade_request

APP = "tests.flask_apps:application"


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def server(request, tmp_path_factory) -> ServerProcess:
    db = tmp_path_factory.mktemp("flask") / f"{request.param}.sqlite3"
    started = start_server(request.param, app=APP, env={"WSM_FLASK_DB": str(db)})
    yield started
    started.stop()


# -- helpers -------------------------------------------------------------------------------


def fetch(server: ServerProcess, method: str, path: str, body: str | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


def login(server: ServerProcess, name: str) -> str:
    """Log in over HTTP; the Cookie header carrying Flask's session."""
    status, response, body = fetch(server, "POST", "/login", f"name={name}",
                                   {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, body
    cookie = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
    assert cookie.startswith("session="), cookie
    return cookie


def ask(server: ServerProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw upgrade request; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(upgrade_request(path, server.port, headers=headers))
        return read_http_response(sock)


def key() -> str:
    return uuid.uuid4().hex[:12]


def teardowns(server: ServerProcess, k: str, n: int) -> list[list]:
    """The teardown_appcontext records of connection ``k``, once there are ``n`` (bounded wait)."""
    found = wait_events(server, k, lambda got: sum(e[0] == "teardown" for e in got) >= n)
    return [event[1:] for event in found if event[0] == "teardown"]


# -- the handshake as a view ---------------------------------------------------------------


def test_anonymous_user_gets_401_from_abort(server):
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.url}/ws/whoami", open_timeout=5)
    assert info.value.response.status_code == 401
    assert info.value.response.headers["X-After-Request"] == "ran"  # finalized as a view's response


def test_logged_in_user_is_current_user_and_reaches_the_connection(server):
    cookie = login(server, "alice")
    with connect(f"{server.url}/ws/whoami", additional_headers={"Cookie": cookie}, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"user": "alice", "type": "User", "app": "tests.flask_apps"}
        ws.send("hi")
        assert ws.recv(timeout=5) == "alice: hi"
    # A forged cookie is no session: anonymous again.
    status, _, _ = ask(server, "/ws/whoami", {"Cookie": "session=forged.value.sig"})
    assert status == 401


def test_abort_renders_the_apps_error_handler(server):
    status, headers, body = ask(server, "/ws/refuse/abort")
    assert (status, body) == (403, b"the app's own 403 page\n")
    assert headers["x-after-request"] == "ran"
    assert "sec-websocket-accept" not in headers


def test_returned_flask_response_is_the_refusal(server):
    status, headers, body = ask(server, "/ws/refuse/response")
    assert (status, body) == (418, b"teapot says no\n")
    assert headers["x-why"] == "teapot" and headers["x-after-request"] == "ran"


def test_exceptions_go_through_flasks_error_handling(server):
    assert ask(server, "/ws/refuse/handled")[::2] == (404, b"handled: no such thing\n")
    status, headers, body = ask(server, "/ws/refuse/unhandled")
    assert status == 500 and b"Internal Server Error" in body  # werkzeug's page, finalized by Flask
    assert headers["x-after-request"] == "ran"
    assert "Exception on /ws/refuse/unhandled [GET]" in server.log()  # app.logger, as for a view
    assert ask(server, "/ws/refuse/core")[::2] == (409, b"core refusal\n")  # HandshakeError keeps its meaning


def test_session_changed_by_a_refusal_is_saved_with_it(server):
    cookie = login(server, "carol")
    status, headers, _ = ask(server, "/ws/refuse/session", {"Cookie": cookie})
    assert status == 409
    new_cookie = headers["set-cookie"].split(";", 1)[0]
    _, _, body = fetch(server, "GET", "/session", headers={"Cookie": new_cookie})
    assert json.loads(body) == {"refused": "yes"}


def test_before_request_guards_the_handshake(server):
    status, _, body = ask(server, "/ws/guarded")
    assert (status, body) == (429, b"guarded by before_request\n")
    with connect(f"{server.url}/ws/guarded", additional_headers={"X-Pass": "yes"}, open_timeout=5) as ws:
        assert ws.recv(timeout=5) == "past the guard"


# -- callbacks in an app context -------------------------------------------------------------


def test_callbacks_see_current_app_and_a_fresh_g_each(server):
    k = key()
    with connect(f"{server.url}/ws/context?id={k}", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"app": "tests.flask_apps", "user_in_state": True}
        ws.send("first")
        assert json.loads(ws.recv(timeout=5)) == {"had": None}
        ws.send("second")
        assert json.loads(ws.recv(timeout=5)) == {"had": None}  # g.mark of the first callback is gone
    # One app context, so one teardown, per callback (on_open, two messages; on_close sets no key).
    assert teardowns(server, k, 3) == [[False, None]] * 3


def test_sqlalchemy_session_is_removed_after_each_callback(server):
    k, room = key(), key()
    with connect(f"{server.url}/ws/notes/{room}?id={k}", open_timeout=5) as ws:
        for expected in ("1", "2", "3"):
            ws.send(f"note {expected}")
            assert ws.recv(timeout=5) == expected  # each committed in its callback, seen by the next
        ws.send("raise")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    # registry.has() read after Flask-SQLAlchemy's teardown: the session is gone, even after the error,
    # and teardown saw the error as after a failed request.
    assert teardowns(server, k, 4) == [[False, None]] * 3 + [[False, "ValueError('callback failed')"]]
    assert "Notes.on_message raised; closing" in server.log()


def test_options_come_from_app_config(server):
    with connect(f"{server.url}/ws/context", open_timeout=5, max_size=None) as ws:
        ws.recv(timeout=5)
        ws.send("x" * 1000)  # under WSMIDDLEWARE_MAX_MESSAGE_SIZE = 1024
        assert ws.recv(timeout=5) == json.dumps({"had": None})
        ws.send("x" * 2000)
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    with connect(f"{server.url}/ws/small", open_timeout=5) as ws:  # the route's own max_message_size=16
        ws.send("x" * 16)
        assert ws.recv(timeout=5) == "x" * 16
        ws.send("x" * 17)
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


# -- the extension pattern, in-process -------------------------------------------------------


class Echo(WS):
    def on_message(self, websocket, message):
        websocket.write(f"{websocket.environ['flask.app.name']}: {message}")


def make_app(name: str, **config) -> Flask:
    app = Flask(name)
    app.config.update(SECRET_KEY="k", **config)

    @app.before_request
    def mark():
        request.environ["flask.app.name"] = name  # what the handshake's before_request left

    return app


def test_one_extension_serves_several_apps_from_a_factory():
    ext = WebSockets(ping_interval=None)
    ext.route("/ws/echo")(Echo)
    first, second = make_app("first"), make_app("second", WSMIDDLEWARE_PING_INTERVAL=7.5)
    ext.init_app(first)
    ext.init_app(second)
    ext.mount("/ws/late", Echo)  # after init_app: mounted on both
    for app in (first, second):
        assert app.extensions["wsmiddleware"] is ext
        middleware = ext.middleware(app)
        assert isinstance(middleware, WebSocketMiddleware) and app.wsgi_app is middleware
        assert isinstance(middleware.integration, FlaskIntegration) and middleware.integration.app is app
        with app.app_context():
            assert ext.middleware() is middleware
    assert first.config["WSMIDDLEWARE_PING_INTERVAL"] is None  # the extension's default, shown in config
    assert ext.middleware(second).options.ping_interval == 7.5  # app.config wins
    for app in (first, second):
        with TestClient(app) as client:
            for path in ("/ws/echo", "/ws/late"):
                with client.connect(path) as ws:
                    ws.send("hi")
                    assert ws.receive(timeout=2) == f"{app.name}: hi"
            assert client.get("/nothing-here").status_int == 404  # plain HTTP reaches Flask


def test_session_and_g_in_on_handshake_and_before_request_can_be_off():
    seen = {}

    class Peek(WS):
        def on_handshake(self, request):
            seen.update(user=session.get("user"), g=g.get("guard"))
            session["changed"] = True  # an accepted handshake sets no cookie: not saved
            return None

    ext = WebSockets()
    ext.mount("/ws/peek", Peek)
    guarded, open_app = make_app("guarded"), make_app("open", WSMIDDLEWARE_BEFORE_REQUEST=False)
    for app in (guarded, open_app):
        @app.before_request
        def guard():
            g.guard = "ran"
            locked = current_app.name == "guarded" and request.path.startswith("/ws/") and "user" not in session
            return ("closed\n", 423) if locked else None

        @app.post("/login")
        def login():
            session["user"] = "dave"
            return "ok"

        ext.init_app(app)
    with TestClient(guarded) as client:
        with pytest.raises(ConnectionRejected) as info:
            client.connect("/ws/peek")
        assert (info.value.status, info.value.body) == (423, b"closed\n")
        client.post("/login")
        client.connect("/ws/peek").close()
        assert seen == {"user": "dave", "g": "ran"}
    with TestClient(open_app) as client:
        client.connect("/ws/peek").close()
        assert seen == {"user": None, "g": None}  # before_request did not run


@pytest.mark.parametrize("config,fragment", [
    ({"WSMIDDLEWARE_PING_INTERVALL": 5}, "unknown wsmiddleware setting(s) in app.config: WSMIDDLEWARE_PING_INTERVALL"),
    ({"WSMIDDLEWARE_PING_INTERVAL": "20"}, "app.config['WSMIDDLEWARE_PING_INTERVAL'] must be int or float or None"),
    ({"WSMIDDLEWARE_MAX_CONNECTIONS": True}, "'WSMIDDLEWARE_MAX_CONNECTIONS'] must be int or None, not True"),
    ({"WSMIDDLEWARE_CLOSE_TIMEOUT": None}, "'WSMIDDLEWARE_CLOSE_TIMEOUT'] must be int or float, not None"),
    ({"WSMIDDLEWARE_ALLOWED_ORIGINS": "https://a.example"}, "must be a list of str or None"),
    ({"WSMIDDLEWARE_COMPRESSION": "gzip"}, "compression must be 'deflate' or None"),
    ({"WSMIDDLEWARE_BEFORE_REQUEST": "no"}, "must be True or False"),
])
def test_bad_configuration_fails_at_init_app(config, fragment):
    app = make_app("bad", **config)
    with pytest.raises(ValueError) as info:
        WebSockets(app)
    assert fragment in str(info.value)
    assert "wsmiddleware" not in app.extensions and not isinstance(app.wsgi_app, WebSocketMiddleware)


def test_misuse_fails_clearly():
    app = make_app("twice")
    ext = WebSockets(app)
    with pytest.raises(RuntimeError, match="already registered"):
        ext.init_app(app)
    with pytest.raises(RuntimeError, match="init_app was not called"):
        ext.middleware(make_app("never"))
    with pytest.raises(TypeError, match="unknown WebSocket option"):
        WebSockets(ping_intervall=3)
    with pytest.raises(TypeError, match="unknown WebSocket option"):
        WebSockets().route("/ws/x", max_mesage_size=3)(Echo)
    with pytest.raises(TypeError, match="must be a WS instance or subclass"):
        ext.mount("/ws/y", object())  # type: ignore[arg-type]


def test_importing_wsmiddleware_does_not_import_flask():
    code = "import sys, wsmiddleware, wsmiddleware.testing; print('flask' in sys.modules)"
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "False"
