"""The opening handshake, checked with raw HTTP requests against real servers."""

import base64

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .support import http_request, upgrade_request


def ask(server, **kwargs):
    path = kwargs.pop("path", "/ws/echo")
    return http_request(server.port, upgrade_request(path, server.port, **kwargs))


def assert_one_line(body: bytes, fragment: str):
    text = body.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    assert fragment in text


def test_valid_upgrade_gets_101_with_accept_key(server):
    key = base64.b64encode(b"0123456789abcdef").decode()
    status, headers, _ = ask(server, key=key)
    assert status == 101
    # RFC 6455 section 1.3's algorithm, computed independently of the server.
    import hashlib

    expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    assert headers["sec-websocket-accept"] == expected.decode()
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_method_other_than_get_is_400(server, method):
    status, _, body = ask(server, method=method, headers={"Content-Length": "0"})
    assert status == 400
    assert_one_line(body, "GET")


def test_http_10_is_400(server):
    status, _, body = ask(server, version="HTTP/1.0")
    assert status == 400
    assert_one_line(body, "HTTP/1.1")


@pytest.mark.parametrize("key,fragment", [
    (None, "missing Sec-WebSocket-Key"),
    ("not base64!!", "base64"),
    (base64.b64encode(b"short").decode(), "16 bytes"),
])
def test_bad_key_is_400(server, key, fragment):
    if key is None:
        status, _, body = ask(server, omit=("Sec-WebSocket-Key",))
    else:
        status, _, body = ask(server, key=key)
    assert status == 400
    assert_one_line(body, fragment)


@pytest.mark.parametrize("connection", ["keep-alive", "close", None])
def test_missing_upgrade_token_in_connection_is_400(server, connection):
    if connection is None:
        status, _, body = ask(server, omit=("Connection",))
    else:
        status, _, body = ask(server, headers={"Connection": connection})
    assert status == 400
    assert_one_line(body, "Connection")


@pytest.mark.parametrize("connection", ["keep-alive, Upgrade", "UPGRADE", "upgrade,keep-alive", "Keep-Alive ,  uPgRaDe"])
def test_connection_token_lists_in_any_case_are_accepted(server, connection):
    status, _, _ = ask(server, headers={"Connection": connection})
    assert status == 101


@pytest.mark.parametrize("version", ["8", "12", "14", "abc"])
def test_other_versions_get_426_naming_13(server, version):
    status, headers, body = ask(server, headers={"Sec-WebSocket-Version": version})
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    assert_one_line(body, "13")


def test_missing_version_gets_426(server):
    status, headers, _ = ask(server, omit=("Sec-WebSocket-Version",))
    assert status == 426
    assert headers["sec-websocket-version"] == "13"


def test_same_origin_is_allowed_by_default(server):
    status, _, _ = ask(server, headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 101


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:1", "null"])
def test_cross_origin_is_403_by_default(server, origin):
    status, _, body = ask(server, headers={"Origin": origin})
    assert status == 403
    assert_one_line(body, "origin")


def test_no_origin_header_is_allowed(server):
    status, _, _ = ask(server, omit=("Origin",))
    assert status == 101


def test_allowed_origins_star_and_list(server):
    assert ask(server, path="/ws/anyorigin", headers={"Origin": "http://evil.example"})[0] == 101
    assert ask(server, path="/ws/listed", headers={"Origin": "https://good.example"})[0] == 101
    status, _, body = ask(server, path="/ws/listed", headers={"Origin": f"http://127.0.0.1:{server.port}"})
    assert status == 403


def test_on_handshake_returned_response_reaches_client_as_given(server):
    status, headers, body = ask(server, path="/ws/guarded")
    assert status == 401
    assert headers["www-authenticate"] == "Token"
    assert headers["x-reason"] == "no-token"
    assert b"token required" in body


def test_on_handshake_raised_response_reaches_client(server):
    status, _, body = ask(server, path="/ws/guarded?token=raise")
    assert status == 403
    assert b"raised: no entry" in body


def test_on_handshake_accepts_and_chooses_subprotocol(server):
    with connect(f"{server.url}/ws/guarded?token=s3cret", subprotocols=["other", "custom"]) as ws:
        assert ws.subprotocol == "custom"
        ws.send("ok")
        assert ws.recv(timeout=5) == "ok"


def test_subprotocol_negotiated_by_server_preference(server):
    with connect(f"{server.url}/ws/info", subprotocols=["v1.chat", "v2.chat"]) as ws:
        assert ws.subprotocol == "v2.chat"
    with connect(f"{server.url}/ws/info", subprotocols=["v1.chat", "x"]) as ws:
        assert ws.subprotocol == "v1.chat"
    with connect(f"{server.url}/ws/info", subprotocols=["x"]) as ws:
        assert ws.subprotocol is None


def test_websockets_client_sees_rejection_status(server):
    with pytest.raises(InvalidStatus) as info:
        connect(f"{server.url}/ws/guarded")
    assert info.value.response.status_code == 401


def test_malformed_extensions_header_is_400(server):
    status, _, body = ask(server, headers={"Sec-WebSocket-Extensions": "permessage-deflate; ===="})
    assert status == 400
    assert_one_line(body, "Extensions")
