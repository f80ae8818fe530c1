"""Keepalive: idle peers are pinged, silent ones closed; ``websocket.ping()`` waiters.

The server under test pings after 0.3 s without traffic and gives up 0.3 s later
(``tests.robust_apps:keepalive``), so a dead peer must be gone, and its
``on_close`` run, within 0.6 s plus the ticker's granularity.
"""

import time
import uuid

import pytest
from websockets.sync.client import connect

from tests.conformance.rawclient import PING, PONG, TEXT, RawClient
from tests.robust_apps import server_counts, server_events, start, wait_until

INTERVAL = TIMEOUT = 0.3
# Scheduling slack on a loaded 2-core machine; the contract is interval + timeout.
TOLERANCE = 1.5


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def ka_server(request):
    server = start(request.param, "keepalive")
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def default_server(request):
    server = start(request.param, "application")
    yield server
    server.stop()


def closed_event(server, key):
    return [e for e in server_events(server, key) if e[0] == "close"]


def test_peer_that_never_answers_pings_is_closed(ka_server):
    key = uuid.uuid4().hex
    with RawClient(ka_server.port, f"/ws/echo?id={key}") as client:
        opened = time.monotonic()
        ping = client.frame(timeout=INTERVAL + TOLERANCE)
        assert ping.opcode == PING
        assert len(ping.payload) > 0  # a unique payload, so that only its pong counts
        # We never answer: the server closes with 1011 and drops TCP.
        client.expect_close(1011, timeout=TIMEOUT + TOLERANCE)
        elapsed = time.monotonic() - opened
    assert INTERVAL + TIMEOUT - 0.1 <= elapsed <= INTERVAL + TIMEOUT + TOLERANCE
    events = wait_until(lambda: closed_event(ka_server, key), timeout=TOLERANCE)
    assert events == [["close", 1011, "keepalive ping timeout"]]


def test_half_open_peer_that_never_reads_is_closed(ka_server):
    # The client stops reading and answering at once, as a peer whose host vanished.
    key = uuid.uuid4().hex
    client = RawClient(ka_server.port, f"/ws/echo?id={key}")
    try:
        opened = time.monotonic()
        events = wait_until(lambda: closed_event(ka_server, key), timeout=INTERVAL + TIMEOUT + TOLERANCE,
                            interval=0.02)
        elapsed = time.monotonic() - opened
        assert events == [["close", 1011, "keepalive ping timeout"]]
        assert elapsed <= INTERVAL + TIMEOUT + TOLERANCE
        # What the server had sent meanwhile: its ping, its close, then the end of the stream.
        assert client.frame().opcode == PING
        client.expect_close(1011)
    finally:
        client.close()
    assert wait_until(lambda: server_counts(ka_server)["websockets"] == 0)


def test_peer_silent_after_sending_data_is_closed(ka_server):
    # Traffic postpones the ping; silence afterwards still ends the connection.
    key = uuid.uuid4().hex
    with RawClient(ka_server.port, f"/ws/echo?id={key}") as client:
        for i in range(5):
            client.echo(TEXT, f"busy {i}".encode())
            time.sleep(INTERVAL / 3)
        assert client.frame(timeout=INTERVAL + TOLERANCE).opcode == PING
        client.expect_close(1011, timeout=TIMEOUT + TOLERANCE)


def test_answering_peer_stays_open_across_many_intervals(ka_server):
    key = uuid.uuid4().hex
    with RawClient(ka_server.port, f"/ws/echo?id={key}") as client:
        pings = 0
        deadline = time.monotonic() + 3 * (INTERVAL + TIMEOUT)
        while time.monotonic() < deadline:
            try:
                frame = client.recv_frame(timeout=0.1)
            except TimeoutError:
                continue
            assert frame is not None and frame.opcode == PING, frame
            pings += 1
            client.send(PONG, frame.payload)
        assert pings >= 2
        client.send(TEXT, b"still here")
        frame = client.frame()
        while frame.opcode == PING:  # a keepalive ping may come first
            client.send(PONG, frame.payload)
            frame = client.frame()
        assert (frame.opcode, frame.payload) == (TEXT, b"still here")
        client.close_cleanly()
    assert closed_event(ka_server, key) == [["close", 1000, ""]]


def test_websockets_client_answers_pings_and_stays_open(ka_server):
    with connect(f"{ka_server.url}/ws/echo") as ws:
        time.sleep(3 * (INTERVAL + TIMEOUT))
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"


def test_wrong_pong_does_not_count(ka_server):
    # An unsolicited pong with another payload is not an answer to the keepalive ping.
    with RawClient(ka_server.port, "/ws/echo") as client:
        ping = client.frame(timeout=INTERVAL + TOLERANCE)
        assert ping.opcode == PING
        client.send(PONG, b"not " + ping.payload)
        client.expect_close(1011, timeout=TIMEOUT + TOLERANCE)


def test_ping_waiter_resolves_only_on_its_pong(default_server):
    with RawClient(default_server.port, "/ws/ping") as client:
        client.send(TEXT, "ping 10")
        ping = client.frame()
        assert ping.opcode == PING
        client.send(PONG, b"someone else's payload")
        client.send(PONG, b"")
        client.expect_silence(0.3)
        client.send(PONG, ping.payload)
        opcode, payload = client.message()
        assert opcode == TEXT and payload.startswith(b"pong ")
        assert float(payload.split()[1]) >= 0.3
        client.close_cleanly()


def test_each_ping_has_its_own_payload(default_server):
    with RawClient(default_server.port, "/ws/ping") as client:
        client.send(TEXT, "ping 10")
        client.send(TEXT, "ping 0.5")
        first, second = client.frame(), client.frame()
        assert first.opcode == second.opcode == PING
        assert first.payload != second.payload
        # Answer the first only: the second times out on its own.
        client.send(PONG, first.payload)
        assert client.message()[1].startswith(b"pong ")
        assert client.message(timeout=5) == (TEXT, b"timeout")
        client.close_cleanly()


def test_ping_waiter_times_out_with_connection_timeout(default_server):
    with RawClient(default_server.port, "/ws/ping") as client:
        client.send(TEXT, "ping 0.3")
        assert client.frame().opcode == PING
        assert client.message(timeout=5) == (TEXT, b"timeout")
        # The connection itself is fine: the next ping is answered and resolves.
        client.send(TEXT, "ping 10")
        ping = client.frame()
        client.send(PONG, ping.payload)
        assert client.message()[1].startswith(b"pong ")
        client.close_cleanly()


def test_ping_waiter_of_a_connection_that_closes_is_released(default_server):
    key = uuid.uuid4().hex
    client = RawClient(default_server.port, f"/ws/ping?id={key}")
    client.send(TEXT, "ping 10")
    assert client.frame().opcode == PING
    client.abort()  # RST, no close frame
    events = wait_until(lambda: closed_event(default_server, key))
    assert events == [["close", 1006, ""]]
    assert wait_until(lambda: server_counts(default_server)["websockets"] == 0)


def test_keepalive_off_sends_no_pings(default_server):
    # The default interval (20 s) is far away: nothing arrives while idle meanwhile.
    with RawClient(default_server.port, "/ws/echo") as client:
        client.expect_silence(0.5)
        client.close_cleanly()
