"""The strict on_handshake contract, end to end on pywsgi and ``gunicorn -k gevent``.

Only ``None`` or an offered subprotocol opens the socket; a WSGI response (returned
or raised) is sent as is; ``False`` is 403; anything else is a logged 500.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from wsmiddleware import PubSubWS, WebSocketMiddleware
from wsmiddleware.pubsub import MemoryPubSub

from .support import RawWebSocket, ServerProcess, read_http_response, start_server, upgrade_request

APP = "tests.contract_apps:application"
HANDLER = "ContractHandler"


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def server(request) -> ServerProcess:
    started = start_server(request.param, app=APP)
    yield started
    started.stop()


def ask(server: ServerProcess, path: str, protocols: str | None = "v1.chat, v2.chat") -> tuple[int, dict, bytes]:
    """One raw upgrade request; the answer's body is de-chunked (gunicorn chunks a body without length)."""
    headers = {"Sec-WebSocket-Protocol": protocols} if protocols else {}
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(upgrade_request(path, server.port, headers=headers))
        status, response_headers, body = read_http_response(sock)
        if "chunked" in response_headers.get("transfer-encoding", ""):
            while not body.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            body = dechunk(body)
    return status, response_headers, body


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2:]


def case(server: ServerProcess, name: str) -> tuple[int, dict, bytes]:
    return ask(server, f"/ws/contract?case={name}")


def assert_one_line(body: bytes) -> None:
    text = body.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text


def error_lines(server: ServerProcess, *fragments: str) -> list[str]:
    return [line for line in server.log().splitlines()
            if "wsmiddleware.handshake ERROR" in line and all(f in line for f in fragments)]


def wait_for_new_line(server: ServerProcess, before: int, *fragments: str, timeout: float = 5.0) -> list[str]:
    """The ERROR lines with ``fragments``, once there are more than ``before`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        found = error_lines(server, *fragments)
        if len(found) > before or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# -- accepting ---------------------------------------------------------------------


def test_none_accepts_with_the_handlers_subprotocol(server):
    status, headers, _ = case(server, "none")
    assert status == 101
    assert headers["sec-websocket-protocol"] == "v1.chat"
    with connect(f"{server.url}/ws/contract?case=none", subprotocols=["v2.chat", "v1.chat"], open_timeout=5) as ws:
        assert ws.subprotocol == "v1.chat"
        assert json.loads(ws.recv(timeout=5))["subprotocol"] == "v1.chat"


def test_offered_string_accepts_with_that_subprotocol(server):
    status, headers, _ = case(server, "offered")
    assert status == 101
    assert headers["sec-websocket-protocol"] == "v2.chat"
    with connect(f"{server.url}/ws/contract?case=offered", subprotocols=["v1.chat", "v2.chat"], open_timeout=5) as ws:
        assert ws.subprotocol == "v2.chat"
        assert json.loads(ws.recv(timeout=5))["subprotocol"] == "v2.chat"
        ws.send("still open")
        assert ws.recv(timeout=5) == "still open"


@pytest.mark.parametrize("name,value", [("unoffered", "v9.chat"), ("empty", "")])
def test_unoffered_string_is_500_and_logged(server, name, value):
    before = len(error_lines(server, HANDLER, repr(value)))
    status, headers, body = case(server, name)
    assert status == 500
    assert "sec-websocket-accept" not in headers
    assert_one_line(body)
    assert len(wait_for_new_line(server, before, HANDLER, repr(value), "did not offer")) == before + 1


def test_string_is_500_when_the_client_offered_no_subprotocol(server):
    status, _, body = ask(server, "/ws/contract?case=offered", protocols=None)
    assert status == 500
    assert_one_line(body)


# -- rejecting ---------------------------------------------------------------------


def test_false_is_403_with_a_one_line_reason(server):
    status, headers, body = case(server, "false")
    assert status == 403
    assert headers["content-type"].startswith("text/plain")
    assert_one_line(body)


def test_webob_exception_returned(server):
    status, _, body = case(server, "webob-returned")
    assert status == 410
    assert b"gone for good" in body


def test_webob_exception_raised(server):
    status, headers, body = case(server, "webob-raised")
    assert status == 401
    assert headers["www-authenticate"] == "Token"
    assert b"raised: no entry" in body


def test_webob_response_returned(server):
    status, _, body = case(server, "webob-response")
    assert status == 409
    assert body == b"plain webob\n"


def test_flask_abort_raised_is_its_status(server):
    status, _, body = case(server, "flask-abort")
    assert status == 401
    assert b"Unauthorized" in body
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.url}/ws/contract?case=flask-abort", open_timeout=5)
    assert info.value.response.status_code == 401


def test_flask_response_returned_is_sent_as_is(server):
    status, _, body = case(server, "flask-response")
    assert status == 418
    assert body == b"no"


def test_plain_wsgi_callable_returned_is_sent_as_is(server):
    status, headers, body = case(server, "wsgi-callable")
    assert status == 451
    assert headers["x-plain"] == "yes"
    assert body == b"plain wsgi refusal\n"


def test_callable_exception_raised_is_sent_as_is(server):
    status, headers, body = case(server, "callable-raised")
    assert status == 429
    assert headers["retry-after"] == "7"
    assert body == b"slow down\n"


def test_handshake_error_raised_keeps_its_status(server):
    status, _, body = case(server, "handshake-error")
    assert status == 409
    assert body == b"go away\n"


# -- programming errors ------------------------------------------------------------


@pytest.mark.parametrize("name,value", [
    ("true", True),
    ("int", 403),
    ("tuple", ("forbidden", 403)),
    ("dict", {}),
])
def test_other_return_values_are_500_and_logged(server, name, value):
    before = len(error_lines(server, HANDLER, f"returned {value!r}"))
    status, headers, body = case(server, name)
    assert status == 500
    assert "sec-websocket-accept" not in headers
    assert_one_line(body)
    assert len(wait_for_new_line(server, before, HANDLER, f"returned {value!r}")) == before + 1


def test_returning_a_response_class_instead_of_an_instance_is_500(server):
    before = len(error_lines(server, HANDLER, "HTTPForbidden"))
    status, _, body = case(server, "class")
    assert status == 500
    assert_one_line(body)
    assert len(wait_for_new_line(server, before, HANDLER, "HTTPForbidden")) == before + 1


@pytest.mark.parametrize("name", ["broken-app", "switching-app"])
def test_a_rejection_that_fails_as_wsgi_app_is_500(server, name):
    before = len(error_lines(server, HANDLER, "fails as a WSGI app"))
    status, headers, body = case(server, name)
    assert status == 500
    assert "sec-websocket-accept" not in headers
    assert_one_line(body)
    assert len(wait_for_new_line(server, before, HANDLER, "fails as a WSGI app")) == before + 1


def test_raising_value_error_is_500_with_traceback_logged(server):
    before = server.log().count("ValueError: contract boom")
    status, _, body = case(server, "value-error")
    assert status == 500
    assert_one_line(body)
    deadline = time.monotonic() + 5
    while server.log().count("ValueError: contract boom") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log()
    assert log.count("ValueError: contract boom") == before + 1
    assert error_lines(server, HANDLER, "on_handshake raised")
    head, _, _ = log.rpartition("ValueError: contract boom")
    assert "Traceback (most recent call last)" in head.rsplit("wsmiddleware.handshake ERROR", 1)[-1]


# -- route variables and state ----------------------------------------------------


def test_url_vars_are_visible_as_request_urlvars(server):
    with connect(f"{server.url}/ws/vars/lobby/7", open_timeout=5) as ws:
        args, named = json.loads(ws.recv(timeout=5))
    assert args == []
    assert named == {"room": "lobby", "num": 7}
    status, _, body = ask(server, "/ws/vars/kitchen/7")
    assert status == 404
    assert b"kitchen" in body


def test_url_vars_merge_with_an_outer_routers_args(server):
    with connect(f"{server.url}/outer/ws/vars/lobby/3", open_timeout=5) as ws:
        args, named = json.loads(ws.recv(timeout=5))
    assert args == ["outer-positional"]
    assert named == {"tenant": "acme", "room": "lobby", "num": 3}


@pytest.mark.parametrize("path", ["/ws/state", "/ws/perconn"])
def test_state_set_in_on_handshake_is_websocket_state(server, path):
    with connect(f"{server.url}{path}?user=alice", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"seen_in_handshake": ["user"], "user": "alice"}
    with connect(f"{server.url}{path}?user=bob", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"seen_in_handshake": ["user"], "user": "bob"}


def test_state_is_empty_when_on_handshake_puts_nothing(server):
    with connect(f"{server.url}/ws/contract?case=none", open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5))["state"] == {}


# -- gevent-websocket: its 101 is already sent, a refusal is close 1008 -------------


@pytest.fixture(scope="module")
def gws_server() -> ServerProcess:
    started = start_server("geventwebsocket", app=APP)
    yield started
    started.stop()


@pytest.mark.parametrize("name", ["true", "false", "unoffered", "value-error", "flask-abort"])
def test_under_gevent_websocket_a_refusal_closes_with_1008(gws_server, name):
    ws = RawWebSocket(gws_server.port, f"/ws/contract?case={name}", headers={"Sec-WebSocket-Protocol": "v1.chat"})
    try:
        code, _ = ws.recv_close(timeout=5)
        assert code == 1008
    finally:
        ws.close()


# -- mount ---------------------------------------------------------------------------


def test_mounting_a_class_that_needs_arguments_fails_at_mount():
    middleware = WebSocketMiddleware(None)
    with pytest.raises(TypeError, match="PubSubWS.*pubsub"):
        middleware.mount("/ws/chat/{room}", PubSubWS)
    with pytest.raises(TypeError, match="PubSubWS"):
        WebSocketMiddleware(None, {"/ws/chat": PubSubWS})
    # An instance, or a class whose arguments all have defaults, mounts fine.
    middleware.mount("/ws/chat/{room}", PubSubWS(MemoryPubSub(), channel="room:{room}"))
    from .contract_apps import PerConnection

    middleware.mount("/ws/perconn", PerConnection)
