"""Presence across workers: ``gunicorn -k gevent -w 2 --preload`` + RedisPubSub(presence_ttl=2).

20 clients over both workers are 20 members from either worker; closing 5 leaves
15 within a second; a SIGKILLed worker's members are gone within the TTL; events
cross workers; a Redis restart or FLUSHALL is repaired within the refresh period.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.parse

import pytest
from websockets.sync.client import connect

from .redis_support import RedisServer
from .support import ServerProcess, on_two_workers, start_server
from .test_pubsub_ws import get_json

APP = "tests.presence_apps:application"
TTL = 2.0


@pytest.fixture
def cluster():
    """A fresh Redis and cluster per test: one test kills a worker, another restarts Redis."""
    redis = RedisServer()
    # --preload: the RedisPubSub is made in the master, before the fork.
    server = start_server("gunicorn", app=APP, workers=2, extra=["--preload"],
                          env={"WSM_TEST_REDIS_URL": redis.url, "WSM_TEST_PRESENCE_TTL": str(TTL)})
    yield redis, server
    server.stop()
    redis.close()


def members(server: ServerProcess, channel: str) -> tuple[int, dict]:
    """(pid of the worker that answered, members it sees)."""
    status, body = get_json(server, "/presence?" + urllib.parse.urlencode({"channel": channel}))
    assert status == 200, body
    return body["pid"], body["members"]


def members_from(server: ServerProcess, channel: str, pid: int, other: int) -> dict:
    """Ask worker ``pid``: the other one is paused meanwhile, so it cannot take the request."""
    os.kill(other, signal.SIGSTOP)
    try:
        answered, found = members(server, channel)
    finally:
        os.kill(other, signal.SIGCONT)
    assert answered == pid
    return found


def wait_members(server: ServerProcess, channel: str, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    found = members(server, channel)[1]
    while not predicate(found) and time.monotonic() < deadline:
        time.sleep(0.02)
        found = members(server, channel)[1]
    return found


class Client:
    __slots__ = ("ws", "pid", "member")

    def __init__(self, ws, pid: int, member: str | None) -> None:
        self.ws, self.pid, self.member = ws, pid, member


def spread(stack: contextlib.ExitStack, server: ServerProcess, path: str, per_worker: int) -> dict[int, list[Client]]:
    """``per_worker`` clients on each of the two workers (bounded), through ``support.on_two_workers``:
    a worker that has enough is paused (SIGSTOP) while the next client connects."""
    clients: dict[int, list[Client]] = {}
    errors: list[BaseException] = []

    def add() -> None:
        try:
            ws = stack.enter_context(connect(f"{server.url}{path}", open_timeout=10))
            hello = json.loads(ws.recv(timeout=10))
            clients.setdefault(hello["hello"], []).append(Client(ws, hello["hello"], hello["member"]))
        except BaseException as exc:  # reported below, from the test's own thread
            errors.append(exc)

    return on_two_workers(clients, add, errors, per_worker)


def test_twenty_members_over_two_workers_close_five_then_kill_a_worker(cluster):
    redis, server = cluster
    channel = "room:acceptance"
    with contextlib.ExitStack() as stack:
        clients = spread(stack, server, "/ws/members/acceptance?hello=1&name=x", per_worker=10)
        first, second = sorted(clients)
        assert len(clients[first]) == len(clients[second]) == 10
        found = members_from(server, channel, first, second)
        assert len(found) == 20 and all(info == {"name": "x"} for info in found.values())
        assert members_from(server, channel, second, first) == found

        assert set(found) == {c.member for group in clients.values() for c in group}

        # Close 5: 3 on the first worker, 2 on the second.
        for client in clients[first][:3] + clients[second][:2]:
            client.ws.close()
        closed = time.monotonic()
        left = wait_members(server, channel, lambda m: len(m) == 15, 1.0)
        assert len(left) == 15 and time.monotonic() - closed <= 1.0
        assert members_from(server, channel, first, second) == members_from(server, channel, second, first)
        assert set(left) == {c.member for c in clients[first][3:] + clients[second][2:]}

        # SIGKILL the first worker: its 7 members expire within the TTL, the second's 8 stay.
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        remaining = wait_members(server, channel, lambda m: len(m) == 8, TTL + 2.0)
        assert time.monotonic() - killed <= TTL + 0.5
        assert set(remaining) == {c.member for c in clients[second][2:]}
        # Whichever worker answers (the second or the one respawned in place of the first): the same.
        for _ in range(5):
            assert members(server, channel)[1] == remaining


def test_join_and_leave_events_cross_workers(cluster):
    redis, server = cluster
    channel = "room:events"
    with contextlib.ExitStack() as stack:
        watcher = stack.enter_context(connect(f"{server.url}/ws/watch/events?hello=1&name=w", open_timeout=10))
        watcher_pid = json.loads(watcher.recv(timeout=10))["hello"]
        own = json.loads(watcher.recv(timeout=10))
        assert own["type"] == "join" and own["info"] == {"name": "w"}
        # The next client lands on the other worker: the watcher's is paused while it connects.
        os.kill(watcher_pid, signal.SIGSTOP)
        try:
            other = connect(f"{server.url}/ws/watch/events?hello=1&name=o", open_timeout=10)
        finally:
            os.kill(watcher_pid, signal.SIGCONT)
        with other:
            assert json.loads(other.recv(timeout=10))["hello"] != watcher_pid
            joined = json.loads(other.recv(timeout=10))
            assert joined["type"] == "join" and joined["info"] == {"name": "o"}
            assert json.loads(watcher.recv(timeout=10)) == joined
            assert set(members(server, channel)[1]) == {own["member"], joined["member"]}
        assert json.loads(watcher.recv(timeout=10)) == {
            "type": "leave", "channel": channel, "member": joined["member"], "info": {"name": "o"}}


def present(server: ServerProcess, channel: str) -> dict | None:
    status, body = get_json(server, "/presence?" + urllib.parse.urlencode({"channel": channel}))
    return body["members"] if status == 200 else None


def test_a_redis_restart_and_a_flushall_are_repaired_within_the_refresh_period(cluster):
    redis, server = cluster
    channel = "room:restart"
    with contextlib.ExitStack() as stack:
        clients = spread(stack, server, "/ws/members/restart?hello=1", per_worker=2)
        expected = {c.member for group in clients.values() for c in group}
        assert set(members(server, channel)[1]) == expected
        redis.kill()
        # Connections open and close meanwhile; nothing fails for them.
        late = stack.enter_context(connect(f"{server.url}/ws/members/restart?hello=1", open_timeout=10))
        expected.add(json.loads(late.recv(timeout=10))["member"])
        gone = clients[min(clients)][0]
        gone.ws.close()
        expected.discard(gone.member)
        assert present(server, channel) is None  # presence() says Redis is away (503)
        redis.start()
        back = time.monotonic()
        deadline = back + TTL / 3 + 8.0  # slack for a loaded machine (CI runs jobs side by side)

        def whole() -> bool:
            found = [present(server, channel) for _ in range(4)]  # most likely from both workers
            return all(f is not None and set(f) == expected for f in found)

        while not whole() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert whole() and time.monotonic() - back <= TTL / 3 + 8.0
        redis.cli("FLUSHALL")
        flushed = time.monotonic()
        while not whole() and time.monotonic() < flushed + TTL / 3 + 8.0:
            time.sleep(0.05)
        assert whole() and time.monotonic() - flushed <= TTL / 3 + 8.0
