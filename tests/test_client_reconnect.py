"""``connect(url, reconnect=True)``: reconnects with backoff, resumes from history,
says whether it recovered; against real servers (tests/recovery_apps.py)."""

from __future__ import annotations

import threading
import time
import urllib.parse
import urllib.request

import gevent
import pytest

from wsmiddleware import ConnectionClosed, ConnectionRejected, connect

from .support import PYTHON, ServerProcess, free_port, start_server

APP = "tests.recovery_apps:application"


@pytest.fixture(params=["pywsgi", "gunicorn"])
def server(request):
    started = start_server(request.param, app=APP)
    yield started
    started.stop()


def get(server: ServerProcess, path: str, **query) -> str:
    url = f"{server.http}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def publish_in_thread(server: ServerProcess, channel: str, count: int, pause: float) -> threading.Thread:
    thread = threading.Thread(target=get, args=(server, "/publish"),
                              kwargs={"channel": channel, "count": count, "pause": pause})
    thread.start()
    return thread


def receive_all(connection, count: int, timeout: float = 30.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.append(connection.receive(timeout=max(0.1, deadline - time.monotonic())))
    return got


def test_forced_drops_lose_nothing_and_recover(server):
    """The server closes the connection (1012) twice while 300 messages are published:
    the client reconnects, resumes, and ends with exactly m1..m300 in order."""
    with connect(f"{server.url}/ws/h/drops", reconnect=True, reconnect_delay=0.05, max_reconnect_delay=0.2) as ws:
        assert ws.recovered is None and ws.subprotocol == "wsmiddleware.v1"
        publisher = publish_in_thread(server, "h:drops", 300, 0.004)
        got = receive_all(ws, 60)
        get(server, "/drop", code=1012)
        got += receive_all(ws, 60)
        get(server, "/drop", code=1001)
        got += receive_all(ws, 180)
        publisher.join(30)
        assert got == [f"m{i}" for i in range(1, 301)]
        assert ws.reconnects == 2 and ws.recovered is True
        assert ws.position is not None and ws.position.offset == 300


def test_a_server_restart_with_memory_history_is_not_recovered_then_live(tmp_path):
    port = free_port()
    argv = [PYTHON, "-m", "tests.serve", "pywsgi", APP, str(port)]
    first = ServerProcess(argv, port, name="restart-a")
    try:
        ws = connect(f"ws://127.0.0.1:{port}/ws/h/restart", reconnect=True, reconnect_delay=0.05,
                     max_reconnect_delay=0.3)
        get(first, "/publish", channel="h:restart", count=3)
        assert receive_all(ws, 3) == ["m1", "m2", "m3"]
        first.stop()
        gevent.sleep(0.5)
        second = ServerProcess(argv, port, name="restart-b")
        try:
            deadline = time.monotonic() + 10
            while get(second, "/count").strip() != "1" and time.monotonic() < deadline:
                gevent.sleep(0.05)
            get(second, "/publish", channel="h:restart", count=1, start=4)
            assert ws.receive(timeout=10) == "m4"
            assert ws.recovered is False and ws.reconnects == 1
            ws.close()
            assert ws.wait_closed(5)
        finally:
            second.stop()
    finally:
        first.stop()


def test_user_close_ends_without_reconnecting(server):
    ws = connect(f"{server.url}/ws/h/userclose", reconnect=True, reconnect_delay=0.05)
    ws.close()
    assert ws.wait_closed(5)
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=2)
    gevent.sleep(0.3)
    assert ws.reconnects == 0 and get(server, "/count").strip() == "0"
    with pytest.raises(ConnectionClosed):
        ws.write("too late")


@pytest.mark.parametrize("code", [1000, 1008])
def test_a_final_close_from_the_server_is_not_retried(server, code):
    ws = connect(f"{server.url}/ws/h/final{code}", reconnect=True, reconnect_delay=0.05)
    deadline = time.monotonic() + 5
    while get(server, "/count").strip() == "0" and time.monotonic() < deadline:
        gevent.sleep(0.02)
    get(server, "/drop", code=code)
    with pytest.raises(ConnectionClosed) as caught:
        ws.receive(timeout=5)
    assert caught.value.code == code
    gevent.sleep(0.3)
    assert ws.reconnects == 0 and ws.closed


def test_write_waits_for_the_reconnect(server):
    with connect(f"{server.url}/ws/h/writes", reconnect=True, reconnect_delay=0.6, max_reconnect_delay=0.6) as ws:
        get(server, "/drop", code=1011)
        deadline = time.monotonic() + 5
        while ws.connected and time.monotonic() < deadline:
            gevent.sleep(0.01)
        assert not ws.connected
        ws.write("sent while reconnecting")  # waits for the new connection
        assert receive_all(ws, 1, 10) == ["sent while reconnecting"]
        assert ws.reconnects == 1


def test_the_first_connection_failure_raises_as_without_reconnect(server):
    with pytest.raises(ConnectionRejected) as caught:
        connect(f"{server.url}/ws/h/x?wsm_since=bad", reconnect=True)
    assert caught.value.status == 400
    with pytest.raises(OSError):
        connect(f"ws://127.0.0.1:{free_port()}/ws/h/x", reconnect=True, open_timeout=2)
    with pytest.raises(ValueError):
        connect(f"{server.url}/ws/h/x", handler=object(), reconnect=True)  # type: ignore[call-overload]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        gevent.sleep(0.02)
    return predicate()


def test_a_5xx_reconnect_is_retried_and_a_4xx_one_is_final(server):
    with connect(f"{server.url}/ws/h/gate", reconnect=True, reconnect_delay=0.05, max_reconnect_delay=0.1) as ws:
        try:
            get(server, "/gate", status=503)
            get(server, "/drop", code=1012)
            assert wait_for(lambda: not ws.connected, 5)
            gevent.sleep(0.6)  # several attempts answered 503
            assert not ws.connected and not ws.closed and ws.reconnects == 0
            get(server, "/gate", status=0)
            assert wait_for(lambda: ws.connected, 5) and ws.reconnects == 1
            get(server, "/publish", channel="h:gate", count=1)
            assert ws.receive(timeout=10) == "m1"  # published before or after its on_open: resumed either way
            get(server, "/gate", status=403)
            get(server, "/drop", code=1012)
            with pytest.raises(ConnectionClosed) as caught:
                ws.receive(timeout=5)
            assert caught.value.code == 1008 and "403" in caught.value.reason
            assert ws.closed and ws.wait_closed(2) and ws.reconnects == 1
        finally:
            get(server, "/gate", status=0)


def test_close_while_reconnecting_ends_at_once(server):
    """close() cuts a backoff short (here 2.5-5 s) and nothing reconnects after it."""
    ws = connect(f"{server.url}/ws/h/closing", reconnect=True, reconnect_delay=5.0, max_reconnect_delay=5.0)
    get(server, "/drop", code=1012)
    assert wait_for(lambda: not ws.connected, 5)
    ws.close()
    assert ws.wait_closed(1.0)
    with pytest.raises(ConnectionClosed):
        ws.receive(timeout=1)
    assert ws.reconnects == 0 and get(server, "/count").strip() == "0"


def test_exit_with_unread_messages_does_not_hang(server):
    with connect(f"{server.url}/ws/h/unread", reconnect=True, max_queue=2) as ws:
        get(server, "/publish", channel="h:unread", count=20)
        assert wait_for(lambda: ws._queue.full(), 5)
        started = time.monotonic()
    assert ws.wait_closed(0.1) and time.monotonic() - started < 1.5
