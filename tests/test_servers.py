"""The same app under every supported gevent server, and a clear 501 elsewhere."""

import contextlib

import pytest
from websockets.sync.client import connect

from .support import http_request, start_server, upgrade_request

SUPPORTED = ["pywsgi", "gunicorn", "gunicorn-pywsgi", "geventwebsocket", "gunicorn-gws"]


@pytest.fixture(scope="module", params=SUPPORTED)
def any_server(request):
    server = start_server(request.param)
    yield server
    server.stop()


def test_echo_round_trips_on_every_server(any_server):
    with connect(f"{any_server.url}/ws/echo") as ws:
        for i in range(50):
            ws.send(f"message {i}")
            assert ws.recv(timeout=5) == f"message {i}"
        ws.send(b"\x00" * 100_000)
        assert ws.recv(timeout=5) == b"\x00" * 100_000


def test_callbacks_and_url_vars_on_every_server(any_server):
    import json

    with connect(f"{any_server.url}/ws/info/r1/3") as ws:
        info = json.loads(ws.recv(timeout=5))
    assert info["url_vars"] == {"room": ["str", "r1"], "num": ["int", "3"]}


def test_many_concurrent_connections_on_every_server(any_server):
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"{any_server.url}/ws/echo")) for _ in range(30)]
        for i, ws in enumerate(clients):
            ws.send(str(i))
        assert [ws.recv(timeout=5) for ws in clients] == [str(i) for i in range(30)]


def test_server_keeps_serving_http_after_websockets(any_server):
    status, _, body = http_request(any_server.port, b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 200 and body.startswith(b"plain app")


def test_gevent_websocket_handler_is_taken_over_not_answered_twice():
    server = start_server("geventwebsocket")
    try:
        status, headers, rest = http_request(server.port, upgrade_request("/ws/echo", server.port))
        assert status == 101
        assert rest == b""  # nothing after the single 101 head
        with connect(f"{server.url}/ws/raise") as ws:
            ws.send("boom")
            try:
                ws.recv(timeout=5)
            except Exception:
                pass
            assert ws.protocol.close_code == 1011
    finally:
        server.stop()


def test_gevent_websocket_rejection_becomes_close_1008():
    server = start_server("geventwebsocket")
    try:
        with connect(f"{server.url}/ws/guarded") as ws:
            try:
                ws.recv(timeout=5)
            except Exception:
                pass
            assert ws.protocol.close_code == 1008
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["wsgiref", "gunicorn-sync"])
def test_unsupported_server_answers_501_and_logs_which_servers_work(kind):
    server = start_server(kind)
    try:
        status, _, body = http_request(server.port, upgrade_request("/ws/echo", server.port))
        assert status == 501
        assert body.decode().count("\n") == 1
        assert b"gunicorn -k gevent" in body
        # Also a way to develop with it: the message names the development server.
        assert b"python -m wsmiddleware serve module:application --reload" in body
        assert "cannot serve WebSocket" in server.log()
        assert "gevent.pywsgi.WSGIServer" in server.log()
        # Plain HTTP still works there.
        status, _, body = http_request(server.port, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200
    finally:
        server.stop()


def test_frame_sent_with_the_handshake_is_not_lost(any_server):
    """Bytes the server read past the request head (its buffer) reach the connection."""
    import os
    import socket

    from .support import read_http_response

    payload = b"pipelined before the 101"
    key = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    with socket.create_connection(("127.0.0.1", any_server.port), timeout=5) as sock:
        sock.sendall(upgrade_request("/ws/echo", any_server.port) + frame)
        status, _, data = read_http_response(sock)
        while len(data) < 2 + len(payload):
            chunk = sock.recv(1024)
            assert chunk, "connection closed before the echo"
            data += chunk
    assert status == 101
    assert data[:2] == bytes([0x81, len(payload)])
    assert data[2:] == payload
