"""Pass-through, routing and mounting behaviour of the middleware, over HTTP."""

import json
import urllib.error
import urllib.request

import pytest
from websockets.sync.client import connect

from wsmiddleware import WS, WebSocketMiddleware

from .support import http_request, start_server, upgrade_request


@pytest.fixture(scope="module")
def bare():
    server = start_server("pywsgi", app="tests.apps:bare")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mounted():
    server = start_server("pywsgi", app="tests.apps:mounted")
    yield server
    server.stop()


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_non_upgrade_requests_reach_the_wrapped_app(server):
    assert get(f"{server.http}/anything") == (200, "plain app: GET |/anything upgrade=None")
    # A plain GET to a WebSocket route also goes to the app when there is one.
    assert get(f"{server.http}/ws/echo") == (200, "plain app: GET |/ws/echo upgrade=None")


def test_upgrade_to_unrouted_path_reaches_the_wrapped_app_unchanged(server):
    status, _, body = http_request(server.port, upgrade_request("/not/a/route", server.port))
    assert status == 200
    assert body == b"plain app: GET |/not/a/route upgrade=websocket"


def test_post_with_body_passes_through(server):
    request = urllib.request.Request(f"{server.http}/form", data=b"a=1", method="POST")
    assert get(request)[1] == "plain app: POST |/form upgrade=None"


def test_plain_get_to_route_without_app_is_426(bare):
    with pytest.raises(urllib.error.HTTPError) as info:
        get(f"{bare.http}/ws/echo")
    assert info.value.code == 426
    assert info.value.headers["Upgrade"] == "websocket"
    assert info.value.read().decode().count("\n") == 1


def test_unknown_path_without_app_is_404(bare):
    with pytest.raises(urllib.error.HTTPError) as info:
        get(f"{bare.http}/nothing")
    assert info.value.code == 404


def test_websocket_still_works_without_app(bare):
    with connect(f"{bare.url}/ws/echo") as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"


def test_mounted_under_prefix_respects_script_name(mounted):
    with connect(f"{mounted.url}/prefix/ws/info/hall/7") as ws:
        info = json.loads(ws.recv(timeout=5))
    assert info["script_name"] == "/prefix"
    assert info["path_info"] == "/ws/info/hall/7"
    assert info["path"] == "/prefix/ws/info/hall/7"
    assert info["url_vars"] == {"room": ["str", "hall"], "num": ["int", "7"]}
    assert get(f"{mounted.http}/prefix/page") == (200, "plain app: GET /prefix|/page upgrade=None")


def test_url_converter_mismatch_falls_through_to_app(server):
    status, _, body = http_request(server.port, upgrade_request("/ws/info/hall/notanint", server.port))
    assert status == 200 and body.startswith(b"plain app")


def test_mount_rejects_non_handlers_and_unknown_options():
    middleware = WebSocketMiddleware(None)
    with pytest.raises(TypeError):
        middleware.mount("/x", object())
    with pytest.raises(TypeError):
        middleware.mount("/x", WS(), no_such_option=1)
    with pytest.raises(ValueError):
        middleware.mount("/x", WS(), slow_consumer="explode")


def test_per_route_options_override_defaults():
    middleware = WebSocketMiddleware(None, {"/a": WS(), "/b": (WS(), {"max_message_size": 10})}, ping_interval=None)
    a, b = (middleware.router.match(p)[0].options["options"] for p in ("/a", "/b"))
    assert a.max_message_size == 2**20 and b.max_message_size == 10
    assert a.ping_interval is None and b.ping_interval is None
