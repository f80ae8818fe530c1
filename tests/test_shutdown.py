"""Graceful shutdown: every open WebSocket gets close 1001, then the process exits.

Three paths, each with real processes and real clients:

* gunicorn ``-k gevent``: SIGTERM to the worker, and SIGTERM to the master (which
  forwards it to its workers); the hook installs itself with the first WebSocket.
* ``wsmiddleware.server`` (gevent.pywsgi with ``shutdown.install``): ``stop()``.
* a plain ``gevent.pywsgi.WSGIServer`` with a pool and no hook: its ``stop()``
  kills the connection greenlets, and each connection sends 1001 as it dies; a
  parked connection has none, and the pool's stand-in greenlet closes it instead.

Each with connections whose reader greenlet is running, and with parked ones.

Clients that answer the close frame complete the closing handshake; one that
never answers is cut off after ``close_timeout`` (2 s in this app).
"""

import contextlib
import os
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conformance.rawclient import CLOSE, TEXT, RawClient
from tests.robust_apps import server_counts, start, wait_until
from wsmiddleware.connection import PARK_AFTER

CLOSE_TIMEOUT = 2.0
TOLERANCE = 3.0


def open_clients(server, stack, n=3, parked=False):
    """``n`` clients and a mute one; ``parked``: wait until no greenlet reads any of them."""
    base = server_counts(server, collect=True)["greenlets"]
    clients = [stack.enter_context(connect(f"{server.url}/ws/echo")) for _ in range(n)]
    for i, ws in enumerate(clients):
        ws.send(f"hello {i}")
        assert ws.recv(timeout=5) == f"hello {i}"
    mute = stack.enter_context(RawClient(server.port))  # reads, but never answers the close frame
    mute.echo(TEXT, b"hello")
    assert wait_until(lambda: server_counts(server)["websockets"] == n + 1)
    if parked:  # only the keepalive ticker and a pool's stand-in greenlet remain
        assert wait_until(lambda: server_counts(server)["greenlets"] <= base + 2, timeout=PARK_AFTER + 5)
    return clients, mute


def assert_closed_with_1001(clients, mute):
    started = time.monotonic()
    for ws in clients:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TOLERANCE)
        assert info.value.rcvd is not None, "no close frame from the server"
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "server shutting down")
        # The server spoke first and the client answered: a complete closing handshake.
        assert info.value.sent is not None and info.value.rcvd_then_sent is True
    frame = mute.frame(timeout=TOLERANCE)
    assert frame.opcode == CLOSE and frame.close_code == 1001
    # Without an answer the server waits close_timeout at most, then drops TCP.
    mute.expect_eof(timeout=CLOSE_TIMEOUT + TOLERANCE)
    assert time.monotonic() - started <= CLOSE_TIMEOUT + TOLERANCE


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie has exited too; it is just not reaped yet.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] == "Z"


@contextlib.contextmanager
def serving(kind):
    """A server of the ``shutdown`` app, and an exit stack for its clients."""
    server = start(kind, "shutdown")
    try:
        with contextlib.ExitStack() as stack:
            yield server, stack
    finally:
        server.stop()


@pytest.mark.parametrize("parked", [False], ids=["reading"])  # gunicorn connections do not park
def test_gunicorn_worker_sigterm_closes_websockets_with_1001(parked):
    with serving("gunicorn") as (server, stack):
        clients, mute = open_clients(server, stack, parked=parked)
        worker = server_counts(server)["pid"]
        assert worker != server.proc.pid
        os.kill(worker, signal.SIGTERM)
        assert_closed_with_1001(clients, mute)
        assert wait_until(lambda: process_gone(worker), timeout=10), "the worker did not exit"
        # Closed by the hook, not killed at the end of gunicorn's graceful timeout.
        assert "Worker graceful timeout" not in server.log()
        # The master replaced it: the server goes on with a fresh worker.
        assert wait_until(lambda: _new_worker_serves(server, worker), timeout=15)


def _new_worker_serves(server, old_pid):
    try:
        with connect(f"{server.url}/ws/echo", open_timeout=2) as ws:
            ws.send("new worker")
            assert ws.recv(timeout=5) == "new worker"
        return server_counts(server)["pid"] != old_pid
    except OSError:
        return False


def test_gunicorn_master_sigterm_closes_websockets_with_1001_and_exits():
    with serving("gunicorn") as (server, stack):
        clients, mute = open_clients(server, stack)
        worker = server_counts(server)["pid"]
        server.proc.send_signal(signal.SIGTERM)
        assert_closed_with_1001(clients, mute)
        assert server.proc.wait(timeout=15) == 0
        assert process_gone(worker)
        assert "Worker graceful timeout" not in server.log()


@pytest.mark.parametrize("parked", [False, True], ids=["reading", "parked"])
@pytest.mark.parametrize("kind", ["wsm", "pywsgi-pool"], ids=["shutdown.install", "GreenletExit"])
def test_pywsgi_stop_closes_websockets_with_1001_and_exits(kind, parked):
    with serving(kind) as (server, stack):
        clients, mute = open_clients(server, stack, parked=parked)
        server.proc.send_signal(signal.SIGTERM)
        assert_closed_with_1001(clients, mute)
        assert server.proc.wait(timeout=15) == 0


def test_shutdown_with_no_websocket_open_exits_cleanly():
    with serving("wsm") as (server, _):
        with connect(f"{server.url}/ws/echo") as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "x"
        assert wait_until(lambda: server_counts(server)["websockets"] == 0)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        assert "did not finish closing" not in server.log()


def test_gunicorn_worker_recycled_by_max_requests_closes_websockets_with_1001():
    # No signal: gunicorn clears the worker's `alive` flag after its max_requests-th
    # request and waits graceful_timeout (30 s here) for the rest. The WebSockets
    # get 1001 at once instead of being cut at the end of that wait.
    server = start("gunicorn", "shutdown", extra=["--max-requests", "4", "--max-requests-jitter", "0",
                                                  "--graceful-timeout", "30"])
    try:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(connect(f"{server.url}/ws/echo")) for _ in range(2)]
            for i, ws in enumerate(clients):
                ws.send(f"hello {i}")
                assert ws.recv(timeout=5) == f"hello {i}"
            worker = server_counts(server)["pid"]  # the third request
            server_counts(server)  # the fourth: the worker stops serving after it
            started = time.monotonic()
            for ws in clients:
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(timeout=10)
                assert info.value.rcvd is not None, "no close frame from the server"
                assert info.value.rcvd.code == 1001
            assert time.monotonic() - started < 10
            assert wait_until(lambda: process_gone(worker), timeout=10), "the worker did not exit"
    finally:
        server.stop()
