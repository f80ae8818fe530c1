"""TestClient: a user's in-process test of a WSGI + WebSocket application."""

from __future__ import annotations

import gc
import json
import subprocess
import textwrap

import gevent
import pytest
import webob

from wsmiddleware import WS, ConnectionClosed, ConnectionRejected
from wsmiddleware.client import connect
from wsmiddleware.testing import TestClient

from .client_apps import make_application
from .support import PYTHON, ROOT


@pytest.fixture
def client():
    with TestClient(make_application()) as test_client:
        yield test_client


def test_the_one_liner_from_the_readme():
    app = make_application()
    with TestClient(app).connect("/ws/echo/lobby") as ws:
        ws.send("hi")
        assert ws.receive(timeout=1) == "hi"


def test_http_requests_reach_the_wrapped_app(client):
    response = client.get("/hello", params={"x": "1"})
    assert isinstance(response, webob.Response)
    assert response.status_int == 200
    assert response.text == "plain: GET /hello user=None"
    form = client.post("/form", data={"a": "1", "b": ["2", "3"]}, params={"q": "z"})
    assert form.json == {"form": {"a": "1", "b": "3"}, "query": {"q": "z"}}
    echoed = client.put("/json", json={"k": [1, 2]})
    assert echoed.json["method"] == "PUT" and echoed.json["json"] == {"k": [1, 2]}


def test_a_plain_request_to_a_websocket_route_reaches_the_app(client):
    # Not an upgrade: the middleware passes it to the wrapped app unchanged.
    assert client.get("/ws/echo").text == "plain: GET /ws/echo user=None"


def test_application_errors_propagate_to_the_test(client):
    with pytest.raises(RuntimeError, match="plain app failure"):
        client.get("/boom")


def test_cookies_from_http_responses_go_with_websocket_connections(client):
    with pytest.raises(ConnectionRejected) as info:
        client.connect("/ws/whoami")
    assert info.value.status == 403
    client.post("/login", data={"name": "alice"})
    assert client.cookies == {"user": "alice"}
    assert client.get("/json").json["user"] == "alice"
    with client.connect("/ws/whoami") as ws:
        assert ws.receive(timeout=2) == "hello alice"
    client.get("/logout")
    assert client.cookies == {}
    with pytest.raises(ConnectionRejected):
        client.connect("/ws/whoami")


def test_several_connections_and_handlers_in_one_test(client):
    received = []

    class Collect(WS):
        def on_message(self, websocket, message):
            received.append(message)

    with client.connect("/ws/echo") as first, client.connect("/ws/burst") as second:
        handled = client.connect("/ws/echo", Collect)
        first.send("a")
        second.send("3")
        handled.send("via handler")
        assert first.receive(timeout=2) == "a"
        assert [second.receive(timeout=2) for _ in range(4)] == ["0", "1", "2", "done"]
        for _ in range(100):
            if received:
                break
            gevent.sleep(0.01)
        assert received == ["via handler"]
        handled.close()
        assert handled.wait_closed(2)


def test_message_routing_through_the_test_client(client):
    with client.connect("/ws/rpc") as ws:
        assert json.loads(ws.receive(timeout=2))["type"] == "welcome"
        ws.send(json.dumps({"type": "add", "id": 1, "a": 2, "b": 3}))
        assert json.loads(ws.receive(timeout=2)) == {"type": "result", "id": 1, "result": 5}


def test_close_ends_open_connections_with_1001_and_stops_the_server():
    test_client = TestClient(make_application())
    ws = test_client.connect("/ws/echo")
    port = test_client.port
    test_client.close()
    assert ws.wait_closed(2)
    assert ws.close_code == 1001
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=1)
    with pytest.raises(ConnectionRefusedError):
        connect(f"ws://127.0.0.1:{port}/ws/echo", open_timeout=2)


def test_garbage_collection_stops_the_listener():
    test_client = TestClient(make_application())
    port = test_client.port
    del test_client
    gc.collect()
    with pytest.raises(ConnectionRefusedError):
        connect(f"ws://127.0.0.1:{port}/ws/echo", open_timeout=2)


def test_paths_must_be_absolute(client):
    with pytest.raises(ValueError):
        client.connect("ws/echo")


def test_works_in_a_monkey_patched_process():
    script = textwrap.dedent("""
        from gevent import monkey
        monkey.patch_all()
        import time
        from wsmiddleware.testing import TestClient
        from tests.client_apps import make_application

        with TestClient(make_application()) as client:
            client.post("/login", data={"name": "bob"})
            with client.connect("/ws/whoami") as ws:
                greeting = ws.receive(timeout=2)
            with client.connect("/ws/echo") as ws:
                ws.send("patched")
                time.sleep(0.05)  # patched: the server keeps serving meanwhile
                echoed = ws.receive(timeout=2)
        print(greeting, echoed)
    """)
    result = subprocess.run([PYTHON, "-c", script], cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello bob patched"
