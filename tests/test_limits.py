"""Limits: message size, bounded request-head reads, max_connections (503)."""

import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conformance.rawclient import BINARY, TEXT, RawClient
from tests.robust_apps import server_counts, server_events, start, wait_until
from tests.support import http_request, read_http_response, upgrade_request

TOLERANCE = 1.5


# -- max_message_size ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def default_server(request):
    server = start(request.param, "application")
    yield server
    server.stop()


def test_message_over_the_limit_closes_with_1009_and_runs_on_close(default_server):
    import uuid

    key = uuid.uuid4().hex
    with connect(f"{default_server.url}/ws/echo?id={key}", max_size=None) as ws:
        ws.send(b"x" * 2**20)
        assert ws.recv(timeout=10) == b"x" * 2**20
        ws.send(b"x" * (2**20 + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 1009
    assert wait_until(lambda: server_events(default_server, key)[-1:] == [["close", 1009, info.value.rcvd.reason]])


# -- bounded handshake read ----------------------------------------------------------------
#
# The WSGI server reads the request, not the middleware. gunicorn's gevent worker
# bounds it with --keep-alive (seconds, default 2; 0 would turn the bound off);
# gevent.pywsgi has no bound at all, so wsmiddleware.server.WSGIServer adds one
# (request_timeout, default 10 s). These servers run with 1 s and 0.5 s.

HEAD_TIMEOUT = {"gunicorn": 1.0, "wsm": 0.5}


@pytest.fixture(scope="module", params=["gunicorn", "wsm"])
def bounded_server(request):
    if request.param == "gunicorn":
        server = start("gunicorn", "application", extra=["--keep-alive", "1"])
    else:
        server = start("wsm", "application", request_timeout=0.5)
    server.head_timeout = HEAD_TIMEOUT[request.param]
    yield server
    server.stop()


def wait_for_drop(sock: socket.socket, timeout: float) -> tuple[float, bytes]:
    """Read until the server closes the connection; return (seconds taken, bytes read)."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, data


@pytest.mark.parametrize("sent", [
    b"",
    b"GET /ws/echo HTTP/1.1\r\n",
    b"GET /ws/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    b"GE",
], ids=["nothing", "request-line", "half-the-headers", "half-a-line"])
def test_client_that_never_finishes_its_request_is_dropped(bounded_server, sent):
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as sock:
        sock.sendall(sent)
        elapsed, answer = wait_for_drop(sock, bounded_server.head_timeout + TOLERANCE + 3)
    assert elapsed <= bounded_server.head_timeout + TOLERANCE
    # Dropped silently, or told why with a 4xx: never a WebSocket, never a 5xx.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer


def test_slow_trickle_is_dropped_too(bounded_server):
    # A byte every 0.2 s never lets the head complete: the bound is on the whole head.
    with socket.create_connection(("127.0.0.1", bounded_server.port)) as sock:
        request = upgrade_request("/ws/echo", bounded_server.port)
        started = time.monotonic()
        dropped = False
        for byte in request[:-4]:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            sock.settimeout(0.2)
            try:
                sock.recv(65536)  # the end of the stream, or a 4xx: the server gave up on us
                dropped = True
                break
            except TimeoutError:
                pass
            except ConnectionResetError:
                dropped = True
                break
            if time.monotonic() - started > bounded_server.head_timeout + TOLERANCE:
                break
        assert dropped, "the server kept waiting for a request head that never completes"
        assert time.monotonic() - started <= bounded_server.head_timeout + TOLERANCE


def test_bound_does_not_touch_open_websockets(bounded_server):
    # Once upgraded, a quiet connection is keepalive's business, not the request timeout's.
    with RawClient(bounded_server.port) as client:
        time.sleep(bounded_server.head_timeout * 2.5)
        client.echo(TEXT, b"still open")
        client.close_cleanly()


def test_complete_requests_are_served_normally(bounded_server):
    with connect(f"{bounded_server.url}/ws/echo") as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
    status, _, body = http_request(bounded_server.port, b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, body) == (200, b"robust apps\n")


# -- max_connections --------------------------------------------------------------------


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def limited_server(request):
    server = start(request.param, "limited")
    yield server
    server.stop()


def test_connections_over_max_connections_get_503(limited_server):
    assert wait_until(lambda: server_counts(limited_server)["websockets"] == 0)
    clients = [RawClient(limited_server.port) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", limited_server.port), timeout=5) as sock:
            sock.sendall(upgrade_request("/ws/echo", limited_server.port))
            status, headers, body = read_http_response(sock)
        assert status == 503
        assert headers["retry-after"] == "5"
        assert body.decode().count("\n") == 1 and "too many" in body.decode()
        with pytest.raises(InvalidStatus) as info:
            connect(f"{limited_server.url}/ws/echo")
        assert info.value.response.status_code == 503
        # The three open ones are unaffected.
        for client in clients:
            client.echo(BINARY, b"fine")
        # Plain HTTP requests are not WebSocket connections: still served.
        assert server_counts(limited_server)["websockets"] == 3
        leaving = clients.pop()
        leaving.close_cleanly()
        # The server half-closed after its close frame and waits for our end of TCP (up
        # to close_timeout) before the connection is over: close it, as clients do.
        leaving.close()
        assert wait_until(lambda: server_counts(limited_server)["websockets"] == 2)
        with connect(f"{limited_server.url}/ws/echo") as ws:
            ws.send("a seat was free again")
            assert ws.recv(timeout=5) == "a seat was free again"
    finally:
        for client in clients:
            client.close()
