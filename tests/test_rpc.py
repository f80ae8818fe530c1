"""Message routing (wsmiddleware.rpc) end to end, with the independent `websockets` client."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

from wsmiddleware.rpc import MessageRouter, on

from .support import PYTHON, ServerProcess, free_port


@pytest.fixture(scope="module")
def rpc_server():
    port = free_port()
    server = ServerProcess([PYTHON, "-m", "tests.client_apps", "--port", str(port)], port, name="rpc")
    yield server
    server.stop()


@pytest.fixture
def ws(rpc_server):
    with connect(f"{rpc_server.url}/ws/rpc", open_timeout=5) as websocket:
        welcome = json.loads(websocket.recv(timeout=5))
        assert welcome["type"] == "welcome"
        yield websocket


def call(ws, message) -> dict:
    ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))
    return json.loads(ws.recv(timeout=5))


def test_welcome_lists_the_registered_types(rpc_server):
    with connect(f"{rpc_server.url}/ws/rpc", open_timeout=5) as ws:
        welcome = json.loads(ws.recv(timeout=5))
    assert welcome == {"type": "welcome", "types": sorted(
        ["add", "crash", "divide", "echo", "notify", "repeat", "sleep", "unserialisable"])}


def test_a_request_with_an_id_gets_its_result(ws):
    assert call(ws, {"type": "add", "id": 1, "a": 2, "b": 40}) == {"type": "result", "id": 1, "result": 42}
    assert call(ws, {"type": "add", "id": "abc", "a": 0.5, "b": 1}) == {"type": "result", "id": "abc", "result": 1.5}


def test_one_method_can_serve_several_types(ws):
    assert call(ws, {"type": "echo", "id": 1, "payload": {"x": [1]}})["result"] == {"x": [1]}
    assert call(ws, {"type": "repeat", "id": 2, "payload": "again"})["result"] == "again"
    assert call(ws, {"type": "echo", "id": 3})["result"] is None


def test_a_message_without_id_gets_no_reply(ws):
    ws.send(json.dumps({"type": "add", "a": 1, "b": 1}))
    ws.send(json.dumps({"type": "notify", "text": "hey"}))
    # The next frames are the pushed event, then the reply to the following request.
    assert json.loads(ws.recv(timeout=5)) == {"type": "notified", "text": "hey"}
    assert call(ws, {"type": "add", "id": 9, "a": 1, "b": 2}) == {"type": "result", "id": 9, "result": 3}


def test_replies_come_in_request_order(ws):
    ws.send(json.dumps({"type": "sleep", "id": "slow", "seconds": 0.1}))
    ws.send(json.dumps({"type": "add", "id": "fast", "a": 1, "b": 1}))
    assert json.loads(ws.recv(timeout=5))["id"] == "slow"
    assert json.loads(ws.recv(timeout=5))["id"] == "fast"


@pytest.mark.parametrize("raw,code,expected_id", [
    ("{not json", "bad_json", None),
    ("", "bad_json", None),
    ("[1, 2, 3]", "bad_message", None),
    ('"just a string"', "bad_message", None),
    ('{"id": 5, "a": 1}', "bad_message", 5),
    ('{"type": 7, "id": 6}', "bad_message", 6),
    ('{"type": "add", "id": [1]}', "bad_message", None),
    ('{"type": "add", "id": true}', "bad_message", None),
    ('{"type": "nope", "id": 8}', "unknown_type", 8),
    ('{"type": "nope"}', "unknown_type", None),
])
def test_bad_messages_get_structured_errors_and_the_connection_lives(ws, raw, code, expected_id):
    reply = call(ws, raw)
    assert reply["type"] == "error"
    assert reply["id"] == expected_id
    assert reply["error"]["code"] == code
    assert reply["error"]["message"]
    assert call(ws, {"type": "add", "id": 1, "a": 1, "b": 1})["result"] == 2


def test_unknown_type_lists_the_known_ones(ws):
    reply = call(ws, {"type": "nope", "id": 1})
    assert "nope" in reply["error"]["message"]
    assert "add" in reply["error"]["data"]["known"]


def test_message_error_carries_its_code_and_data(ws):
    reply = call(ws, {"type": "divide", "id": 3, "a": 1, "b": 0})
    assert reply == {"type": "error", "id": 3, "error": {
        "code": "division_by_zero", "message": "cannot divide by zero", "data": {"a": 1}}}
    assert call(ws, {"type": "divide", "id": 4, "a": 1, "b": 4})["result"] == 0.25


def test_handler_exceptions_are_internal_errors_logged_with_a_traceback(ws, rpc_server):
    reply = call(ws, {"type": "crash", "id": 11})
    assert reply["type"] == "error" and reply["id"] == 11
    assert reply["error"]["code"] == "internal_error"
    assert "handler bug" not in reply["error"]["message"]  # no internals leak to the peer
    missing_field = call(ws, {"type": "add", "id": 12, "a": 1})
    assert missing_field["error"]["code"] == "internal_error"
    unserialisable = call(ws, {"type": "unserialisable", "id": 13})
    assert unserialisable["error"]["code"] == "internal_error"
    assert call(ws, {"type": "add", "id": 14, "a": 1, "b": 1})["result"] == 2
    log = rpc_server.log()
    assert "handler for 'crash' raised" in log
    assert "RuntimeError: handler bug requested by the test" in log


def test_a_crash_without_id_still_gets_an_error(ws):
    reply = call(ws, {"type": "crash"})
    assert reply["error"]["code"] == "internal_error" and reply["id"] is None


def test_binary_messages_are_refused_politely(ws):
    reply = call(ws, b"\x00\x01")
    assert reply["error"]["code"] == "bad_message"
    assert call(ws, {"type": "add", "id": 1, "a": 1, "b": 1})["result"] == 2


def test_many_bad_messages_never_close_the_connection(ws):
    for i in range(50):
        ws.send("{" * (i % 5 + 1))
    for _ in range(50):
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == "bad_json"
    ws.close()
    assert ws.close_code == 1000


def test_subclasses_inherit_and_override_routes(rpc_server):
    with connect(f"{rpc_server.url}/ws/rpc2", open_timeout=5) as ws:
        welcome = json.loads(ws.recv(timeout=5))
        assert "mul" in welcome["types"] and "add" in welcome["types"]
        assert call(ws, {"type": "add", "id": 1, "a": "x", "b": "y"})["result"] == "xy"
        assert call(ws, {"type": "mul", "id": 2, "a": 6, "b": 7})["result"] == 42
        assert call(ws, {"type": "echo", "id": 3, "payload": "inherited"})["result"] == "inherited"


def test_on_needs_type_names():
    with pytest.raises(TypeError):
        on()
    with pytest.raises(TypeError):
        on("")

    class Router(MessageRouter):
        @on("a", "b")
        def both(self, websocket, message):
            return None

    assert Router.message_types() == ["a", "b"]
