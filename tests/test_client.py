"""The gevent client (wsmiddleware.client) against real servers on loopback.

The servers are child processes (pywsgi, gunicorn) whose server side is tested
independently in test_connection.py; the few misbehaving servers below are raw
sockets served in-process by gevent, sending exactly the bytes a case needs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import time

import gevent
import pytest
from gevent.server import StreamServer

from wsmiddleware import WS, ConnectionClosed, ConnectionRejected, ConnectionTimeout
from wsmiddleware.client import connect

from .conftest import wait_events
from .support import BIN, PYTHON, ServerProcess, free_port


def unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


@pytest.fixture(scope="module")
def apps_server():
    port = free_port()
    server = ServerProcess([PYTHON, "-m", "tests.client_apps", "--port", str(port)], port, name="client-apps")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made now with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def tls_server(request, certificate):
    """The test apps behind TLS, terminated by gevent.pywsgi or by gunicorn's gevent worker."""
    cert, key = certificate
    port = free_port()
    if request.param == "pywsgi":
        argv = [PYTHON, "-m", "tests.client_apps", "--port", str(port), "--certfile", str(cert), "--keyfile", str(key)]
    else:
        argv = [str(BIN / "gunicorn"), "-k", "gevent", "-b", f"127.0.0.1:{port}", "--certfile", str(cert),
                "--keyfile", str(key), "tests.client_apps:application"]
    server = ServerProcess(argv, port, name=f"client-apps-tls-{request.param}")
    yield server
    server.stop()


# -- messages without a handler ----------------------------------------------------


def test_text_and_binary_round_trip(server):
    with connect(f"{server.url}/ws/echo") as ws:
        ws.send("héllo ☃")
        assert ws.receive(timeout=5) == "héllo ☃"
        ws.write(b"\x00\xffbinary")
        assert ws.receive(timeout=5) == b"\x00\xffbinary"
        ws.send("")
        assert ws.receive(timeout=5) == ""
    assert ws.close_code == 1000
    assert ws.closed


@pytest.mark.parametrize("compression", ["deflate", None])
def test_large_messages_with_and_without_compression(apps_server, compression):
    text = "wsmiddleware " * 40_000  # compressible, ~520 KB
    data = os.urandom(300_000)  # incompressible
    with connect(f"{apps_server.url}/ws/echo", compression=compression) as ws:
        extensions = dict((k.lower(), v) for k, v in ws.response_headers).get("sec-websocket-extensions", "")
        assert ("permessage-deflate" in extensions) == (compression == "deflate")
        ws.send(text)
        ws.send(data)
        assert ws.receive(timeout=10) == text
        assert ws.receive(timeout=10) == data


def test_iteration_ends_at_a_normal_close(apps_server):
    with connect(f"{apps_server.url}/ws/burst") as ws:
        ws.send("close 5")
        received = list(ws)
    assert received == ["0", "1", "2", "3", "4"]
    assert (ws.close_code, ws.close_reason) == (1000, "burst over")


def test_receive_after_close_raises_connection_closed_with_the_code(server):
    with connect(f"{server.url}/ws/closer?code=4003&reason=go+away") as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.receive(timeout=5)
        assert (info.value.code, info.value.reason) == (4003, "go away")
        with pytest.raises(ConnectionClosed):
            ws.receive(timeout=5)
        with pytest.raises(ConnectionClosed):
            ws.send("too late")


def test_iteration_raises_on_an_abnormal_close(server):
    with connect(f"{server.url}/ws/closer?code=4003&reason=nope") as ws:
        with pytest.raises(ConnectionClosed) as info:
            for _ in ws:
                pass
    assert info.value.code == 4003


def test_receive_timeout_leaves_the_connection_usable(apps_server):
    with connect(f"{apps_server.url}/ws/echo") as ws:
        with pytest.raises(ConnectionTimeout):
            ws.receive(timeout=0.05)
        ws.send("still here")
        assert ws.receive(timeout=5) == "still here"


def test_a_full_queue_pauses_reading_and_loses_nothing(apps_server):
    with connect(f"{apps_server.url}/ws/burst", max_queue=4) as ws:
        ws.send("300")
        gevent.sleep(0.2)  # the server sends everything while nobody reads
        assert ws.websocket.handler.queue.qsize() <= 4
        assert [ws.receive(timeout=5) for _ in range(301)] == [str(i) for i in range(300)] + ["done"]


def test_writes_from_many_greenlets(apps_server):
    with connect(f"{apps_server.url}/ws/echo") as ws:
        gevent.joinall([gevent.spawn(ws.send, f"g{i}") for i in range(50)], timeout=5)
        got = {ws.receive(timeout=5) for _ in range(50)}
    assert got == {f"g{i}" for i in range(50)}


def test_context_exit_closes_with_1000_seen_by_the_server(server):
    key = unique("client-exit")
    with connect(f"{server.url}/ws/record?id={key}") as ws:
        ws.send("one")
        assert ws.receive(timeout=5) == "one"
    assert ws.wait_closed(0)
    found = wait_events(server, key, lambda e: any(x[0] == "close" for x in e), sleep=gevent.sleep)
    assert found[0] == ["open"]
    assert ["message", "one"] in found
    assert found[-1] == ["close", 1000, ""]


# -- handshake options ---------------------------------------------------------------


def test_headers_query_and_subprotocol_reach_the_server(apps_server):
    with connect(f"{apps_server.url}/ws/headers?room=lobby&n=2", subprotocols=["v1.chat", "other"],
                 headers={"X-Test": "yes", "Cookie": "session=abc"}, origin=apps_server.http) as ws:
        info = json.loads(ws.receive(timeout=5))
    assert info["headers"]["X-Test"] == "yes"
    assert info["headers"]["Cookie"] == "session=abc"
    assert info["headers"]["Origin"] == apps_server.http
    assert info["query"] == {"room": "lobby", "n": "2"}
    assert info["subprotocol"] == "v1.chat"
    assert ws.subprotocol == "v1.chat"


def test_rejection_carries_status_headers_and_body(apps_server):
    with pytest.raises(ConnectionRejected) as info:
        connect(f"{apps_server.url}/ws/guarded")
    rejected = info.value
    assert rejected.status == 401
    headers = {k.lower(): v for k, v in rejected.headers}
    assert headers["www-authenticate"] == "Token"
    assert headers["x-reason"] == "no-token"
    assert rejected.body == b"token required\n"
    with connect(f"{apps_server.url}/ws/guarded?token=s3cret") as ws:
        ws.send("in")
        assert ws.receive(timeout=5) == "in"


def test_a_plain_http_page_is_a_rejection_not_a_hang(apps_server):
    with pytest.raises(ConnectionRejected) as info:
        connect(f"{apps_server.url}/not-a-websocket", open_timeout=5)
    assert info.value.status == 200
    assert info.value.body.startswith(b"plain: GET /not-a-websocket")


def test_bad_upgrade_answer_from_the_middleware_is_a_rejection(server):
    # The server refuses a cross-origin browser request with a one-line 403.
    with pytest.raises(ConnectionRejected) as info:
        connect(f"{server.url}/ws/echo", origin="https://evil.example")
    assert info.value.status == 403
    assert b"evil.example" in info.value.body


def test_open_timeout_raises_connection_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # the kernel completes the TCP handshake; nobody ever answers
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionTimeout):
            connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/", open_timeout=0.3)
        assert time.monotonic() - started < 5
    finally:
        listener.close()


def test_refused_connection_raises_oserror():
    with pytest.raises(ConnectionRefusedError):
        connect(f"ws://127.0.0.1:{free_port()}/ws/echo", open_timeout=2)


def test_invalid_urls_are_value_errors():
    with pytest.raises(ValueError):
        connect("http://127.0.0.1/ws")


# -- misbehaving servers (raw bytes, served in-process) ----------------------------------


def _accept_for(request: bytes) -> str:
    key = ""
    for line in request.decode("latin-1").split("\r\n"):
        if line.lower().startswith("sec-websocket-key:"):
            key = line.split(":", 1)[1].strip()
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()


def _read_head(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture
def raw_server():
    """Start a gevent StreamServer whose handler is given; yield its port."""
    servers = []

    def start(handle):
        server = StreamServer(("127.0.0.1", 0), handle)
        server.start()
        servers.append(server)
        return server.server_port

    yield start
    for server in servers:
        server.stop(timeout=1)


def test_frames_sent_with_the_101_are_not_lost(raw_server):
    def handle(sock, address):
        request = _read_head(sock)
        answer = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {_accept_for(request)}\r\n\r\n").encode()
        # The 101 and two frames in one segment: a text "hello" and a binary b"\x01\x02".
        sock.sendall(answer + b"\x81\x05hello" + b"\x82\x02\x01\x02")
        while sock.recv(4096):
            pass

    port = raw_server(handle)
    with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        assert ws.receive(timeout=5) == "hello"
        assert ws.receive(timeout=5) == b"\x01\x02"


def test_a_101_with_a_wrong_accept_key_is_rejected(raw_server):
    def handle(sock, address):
        _read_head(sock)
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n")
        gevent.sleep(1)

    port = raw_server(handle)
    with pytest.raises(ConnectionRejected) as info:
        connect(f"ws://127.0.0.1:{port}/", open_timeout=5)
    assert info.value.status == 101
    assert "Sec-WebSocket-Accept" in str(info.value)


def test_a_server_that_hangs_up_without_answering_is_connection_closed(raw_server):
    def handle(sock, address):
        _read_head(sock)
        sock.close()

    port = raw_server(handle)
    with pytest.raises(ConnectionClosed) as info:
        connect(f"ws://127.0.0.1:{port}/", open_timeout=5)
    assert info.value.code == 1006


def test_garbage_instead_of_http_is_connection_closed(raw_server):
    def handle(sock, address):
        _read_head(sock)
        sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        sock.close()

    port = raw_server(handle)
    with pytest.raises(ConnectionClosed):
        connect(f"ws://127.0.0.1:{port}/", open_timeout=5)


# -- WS handlers on the client side ------------------------------------------------------------


class Collector(WS):
    def __init__(self):
        self.calls = []

    def on_open(self, websocket):
        self.calls.append(("open",))
        websocket.write("first")

    def on_message(self, websocket, message):
        self.calls.append(("message", message))
        if message == "first":
            websocket.write(b"second")

    def on_bytes(self, websocket, data):
        self.calls.append(("bytes", data))
        websocket.close(4000, "enough")

    def on_close(self, websocket):
        self.calls.append(("close", websocket.close_code, websocket.close_reason))


def test_a_ws_handler_drives_the_same_callbacks_as_on_the_server(server):
    handler = Collector()
    connection = connect(f"{server.url}/ws/echo", handler)
    assert connection.wait_closed(5)
    assert handler.calls == [("open",), ("message", "first"), ("bytes", b"second"), ("close", 4000, "enough")]
    with pytest.raises(TypeError):
        connection.receive()


def test_a_handler_class_gets_one_instance_per_connection(apps_server):
    instances = []

    class PerConnection(WS):
        def __init__(self):
            instances.append(self)

        def on_open(self, websocket):
            websocket.close()

    first = connect(f"{apps_server.url}/ws/echo", PerConnection)
    second = connect(f"{apps_server.url}/ws/echo", PerConnection)
    assert first.wait_closed(5) and second.wait_closed(5)
    assert len(instances) == 2 and instances[0] is not instances[1]


def test_a_raising_client_callback_closes_with_1011(server):
    key = unique("client-raise")

    class Raising(WS):
        def on_message(self, websocket, message):
            raise RuntimeError("client handler bug (expected by the test)")

    connection = connect(f"{server.url}/ws/record?id={key}", Raising)
    connection.send("trigger")
    assert connection.wait_closed(5)
    assert connection.close_code == 1011
    found = wait_events(server, key, lambda e: any(x[0] == "close" for x in e), sleep=gevent.sleep)
    assert found[-1] == ["close", 1011, "internal error"]


def test_client_answers_server_pings_and_on_ping_sees_them(apps_server):
    with connect(f"{apps_server.url}/ws/pings") as ws:
        ws.send("ping")
        assert ws.receive(timeout=5) == "pong received"

    seen, answers = [], []

    class Watching(WS):
        def on_ping(self, websocket, payload):
            seen.append(payload)  # the pong is sent by the protocol, as RFC 6455 requires

        def on_message(self, websocket, message):
            answers.append(message)
            websocket.close()

    connection = connect(f"{apps_server.url}/ws/pings", Watching)
    connection.send("ping")
    assert connection.wait_closed(5)
    assert answers == ["pong received"] and len(seen) == 1


def test_client_ping_waits_for_the_pong(server):
    with connect(f"{server.url}/ws/echo") as ws:
        rtt = ws.ping().wait(5)
        assert rtt >= 0
        waiters = [ws.ping(f"p{i}") for i in range(5)]
        assert all(waiter.wait(5) >= 0 for waiter in waiters)


def test_client_max_message_size_closes_with_1009(apps_server):
    with connect(f"{apps_server.url}/ws/echo", max_message_size=1000) as ws:
        ws.send("x" * 2000)  # the echo is too big for this client
        with pytest.raises(ConnectionClosed) as info:
            ws.receive(timeout=5)
    assert info.value.code == 1009


def test_client_keepalive_pings_an_idle_server(server):
    key = unique("client-keepalive")
    with connect(f"{server.url}/ws/record?id={key}", ping_interval=0.1, ping_timeout=2) as ws:
        found = wait_events(server, key, lambda e: any(x[0] == "ping" for x in e), sleep=gevent.sleep)
        assert not ws.closed
    assert any(x[0] == "ping" for x in found)


# -- TLS -----------------------------------------------------------------------------------------


def test_wss_with_a_trusted_self_signed_certificate(tls_server, certificate):
    context = ssl.create_default_context(cafile=str(certificate[0]))
    with connect(f"wss://127.0.0.1:{tls_server.port}/ws/echo", ssl=context) as ws:
        ws.send("over tls")
        assert ws.receive(timeout=5) == "over tls"
        payload = os.urandom(200_000)
        ws.send(payload)
        assert ws.receive(timeout=10) == payload
    assert ws.close_code == 1000


def test_wss_rejects_an_untrusted_certificate(tls_server):
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(f"wss://127.0.0.1:{tls_server.port}/ws/echo", open_timeout=5)
