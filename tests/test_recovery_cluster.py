"""Nothing lost across workers: ``gunicorn -k gevent -w 2`` + RedisPubSub with history,
a worker SIGKILLed or Redis restarted while 1,000 numbered messages are published."""

from __future__ import annotations

import json
import os
import signal
import time

import gevent
import pytest

from wsmiddleware import ConnectionTimeout, connect

from .redis_support import RedisServer
from .support import start_server
from .test_pubsub_history_redis import publisher

APP = "tests.recovery_cluster_apps:application"
TOTAL = 1000


@pytest.fixture
def cluster():
    redis = RedisServer(persistent=True)
    server = start_server("gunicorn", app=APP, env={"WSM_TEST_REDIS_URL": redis.url}, workers=2)
    yield redis, server
    server.stop()
    redis.close()


def read(ws, until, timeout: float = 60.0) -> tuple[list[str], list[int]]:
    """Data messages (and worker pids from hellos) until ``until(messages)`` holds."""
    messages: list[str] = []
    pids: list[int] = []
    deadline = time.monotonic() + timeout
    while not until(messages) and time.monotonic() < deadline:
        try:
            item = ws.receive(timeout=max(0.05, deadline - time.monotonic()))
        except ConnectionTimeout:
            break
        if isinstance(item, str) and item.startswith('{"type": "hello"'):
            pids.append(json.loads(item)["pid"])
        else:
            messages.append(item)
    return messages, pids


def test_a_client_whose_worker_is_killed_recovers_every_message_in_order(cluster):
    redis, server = cluster
    with connect(f"{server.url}/ws/h/kill", reconnect=True, reconnect_delay=0.05, max_reconnect_delay=0.5) as ws:
        first, pids = read(ws, lambda m: False, timeout=0.5)
        assert first == [] and len(pids) == 1
        proc = publisher(redis.url, "h:kill", "m", TOTAL, 0.004)
        try:
            half, _ = read(ws, lambda m: len(m) >= TOTAL // 2)
            os.kill(pids[0], signal.SIGKILL)
            rest, later = read(ws, lambda m: len(half) + len(m) >= TOTAL)
            assert proc.wait(60) == 0
        finally:
            proc.kill()
        assert half + rest == [f"m:{i}" for i in range(1, TOTAL + 1)]
        assert ws.recovered is True and ws.reconnects >= 1
        assert later and later[0] != pids[0]


def test_a_redis_restart_loses_nothing_for_connected_clients(cluster):
    redis, server = cluster
    clients = [connect(f"{server.url}/ws/h/restart", reconnect=True, reconnect_delay=0.05) for _ in range(6)]
    try:
        pids = set()
        for ws in clients:
            pids.update(read(ws, lambda m: False, timeout=0.3)[1])
        proc = publisher(redis.url, "h:restart", "m", TOTAL, 0.004)
        try:
            got = [read(clients[0], lambda m: len(m) >= TOTAL // 2)[0]]
            redis.kill()
            gevent.sleep(0.5)
            redis.start()
            got[0] += read(clients[0], lambda m: len(got[0]) + len(m) >= TOTAL)[0]
            got += [read(ws, lambda m: len(m) >= TOTAL)[0] for ws in clients[1:]]
            assert proc.wait(60) == 0
        finally:
            proc.kill()
        for messages in got:
            assert messages == [f"m:{i}" for i in range(1, TOTAL + 1)]
        assert all(ws.reconnects == 0 for ws in clients)
    finally:
        for ws in clients:
            ws.close()


def test_a_reconnect_after_flushall_is_not_recovered_then_live(cluster):
    redis, server = cluster
    with connect(f"{server.url}/ws/h/flush", reconnect=True, reconnect_delay=0.05) as ws:
        read(ws, lambda m: False, timeout=0.3)
        proc = publisher(redis.url, "h:flush", "a", 3)
        assert proc.wait(30) == 0
        assert read(ws, lambda m: len(m) >= 3)[0] == ["a:1", "a:2", "a:3"]
        assert redis.cli("FLUSHALL") == "OK"
        for pid in {int(p) for p in _worker_pids(server)}:
            os.kill(pid, signal.SIGKILL)
        reconnected(ws)
        proc = publisher(redis.url, "h:flush", "b", 2)
        assert proc.wait(30) == 0
        messages, _ = read(ws, lambda m: "b:2" in m, timeout=30)
        assert ws.recovered is False
        assert messages == ["b:1", "b:2"]


def test_a_reconnect_after_more_than_n_messages_is_not_recovered_then_live(cluster):
    """Both workers frozen while 20 messages go into a history of 10; the client's
    worker killed, the other let go: the reconnect says not recovered, then live."""
    redis, server = cluster
    with connect(f"{server.url}/ws/small/x", reconnect=True, reconnect_delay=0.05) as ws:
        _, pids = read(ws, lambda m: False, timeout=0.3)
        proc = publisher(redis.url, "small:x", "a", 3)
        assert proc.wait(30) == 0
        assert read(ws, lambda m: len(m) >= 3)[0] == ["a:1", "a:2", "a:3"]
        workers = [int(p) for p in _worker_pids(server)]
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            proc = publisher(redis.url, "small:x", "b", 20)
            assert proc.wait(30) == 0
            os.kill(pids[0], signal.SIGKILL)
        finally:
            for pid in workers:
                if pid != pids[0]:
                    os.kill(pid, signal.SIGCONT)
        reconnected(ws)
        proc = publisher(redis.url, "small:x", "c", 2)
        assert proc.wait(30) == 0
        messages, _ = read(ws, lambda m: "c:2" in m, timeout=30)
        assert ws.recovered is False
        assert messages == ["c:1", "c:2"]


def reconnected(ws, timeout: float = 30.0) -> None:
    """Wait (bounded) until the client has reconnected and is connected."""
    deadline = time.monotonic() + timeout
    while not (ws.reconnects and ws.connected) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert ws.reconnects >= 1 and ws.connected


def _worker_pids(server) -> list[str]:
    out = os.popen(f"pgrep -P {server.proc.pid}").read().split()
    return out
