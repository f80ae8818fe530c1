"""Parking: an idle connection holds no greenlet, and wakes up when its peer speaks.

Checked on the servers whose socket can be taken over (pywsgi with and without a
pool) through ``/debug/counts``, which counts the live gevent greenlets of the
server process: once parked, N open connections add at most the keepalive ticker
and the pool's stand-in greenlet. gunicorn's gevent worker keeps each connection
in its WSGI call (nothing public lets its keep-alive loop let go of the socket
with a normal return): idle connections there hold their greenlet, and work.
"""

import contextlib

import pytest
from websockets.sync.client import connect

from tests.robust_apps import server_counts, server_events, start, wait_until
from wsmiddleware.connection import PARK_AFTER

N = 30
#: The keepalive ticker, and the stand-in greenlet in a server's pool.
OVERHEAD = 2


@pytest.fixture(params=["pywsgi", "pywsgi-pool"])
def server(request):
    server = start(request.param)
    try:
        yield server
    finally:
        server.stop()


def parked(server, base, n):
    counts = server_counts(server)
    return counts["websockets"] == n and counts["greenlets"] <= base + OVERHEAD


def test_idle_connections_park_wake_on_input_and_park_again(server):
    base = server_counts(server, collect=True)["greenlets"]
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"{server.url}/ws/echo")) for _ in range(N)]
        # Fresh connections park at their first wait.
        assert wait_until(lambda: parked(server, base, N)), server_counts(server)
        for i, ws in enumerate(clients):
            ws.send(f"message {i}")
            assert ws.recv(timeout=5) == f"message {i}"
        # Readers that have woken up park again once idle for PARK_AFTER.
        assert wait_until(lambda: parked(server, base, N), timeout=PARK_AFTER + 5), server_counts(server)
        for i, ws in enumerate(clients):
            ws.send(b"bytes %d" % i)
            assert ws.recv(timeout=5) == b"bytes %d" % i
    assert wait_until(lambda: server_counts(server)["websockets"] == 0)
    assert wait_until(lambda: server_counts(server, collect=True)["greenlets"] <= base + 1)


def test_parked_connection_closed_by_its_peer_runs_on_close(server):
    base = server_counts(server, collect=True)["greenlets"]
    with connect(f"{server.url}/ws/echo?id=parked-close") as ws:
        assert wait_until(lambda: parked(server, base, 1))
        ws.close(4001, "bye")
    assert wait_until(lambda: server_events(server, "parked-close")) == [["open"], ["close", 4001, "bye"]]


def test_a_ping_waiter_resolves_on_a_connection_that_parked(server):
    base = server_counts(server, collect=True)["greenlets"]
    with connect(f"{server.url}/ws/ping") as ws:
        assert wait_until(lambda: parked(server, base, 1))
        # The ping route answers from a spawned greenlet, waiting for our pong:
        # the pong wakes the parked reader, which resolves the waiter.
        ws.send("ping 5")
        assert ws.recv(timeout=5).startswith("pong ")


def test_gunicorn_connections_stay_in_their_request_and_serve_after_idling():
    server = start("gunicorn")
    try:
        base = server_counts(server, collect=True)["greenlets"]
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(f"{server.url}/ws/echo")) for _ in range(5)]
            assert wait_until(lambda: server_counts(server)["websockets"] == 5)
            # Idle past PARK_AFTER: each still has its request greenlet.
            wait_until(lambda: False, timeout=PARK_AFTER + 0.5)
            assert server_counts(server)["greenlets"] >= base + 5
            for i, ws in enumerate(clients):
                ws.send(f"message {i}")
                assert ws.recv(timeout=5) == f"message {i}"
        assert wait_until(lambda: server_counts(server)["websockets"] == 0)
    finally:
        server.stop()
