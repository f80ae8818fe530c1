"""PubSubWS end to end: real servers in child processes, independent WebSocket clients.

In memory under gevent.pywsgi, and through Redis under ``gunicorn -k gevent -w 2``
where clients provably sit on different worker processes.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed as WSConnectionClosed
from websockets.sync.client import connect

from .support import RawWebSocket, ServerProcess, on_two_workers, start_server

APP = "tests.pubsub_apps:application"


def get_json(server: ServerProcess, path: str, timeout: float = 10.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.http + path, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def publish(server: ServerProcess, channel: str, text: str | None = None, data: bytes | None = None) -> tuple[int, dict]:
    query = {"channel": channel}
    if data is not None:
        query["hex"] = data.hex()
    else:
        query["text"] = text or ""
    return get_json(server, "/publish?" + urllib.parse.urlencode(query))


def join(stack: contextlib.ExitStack, server: ServerProcess, path: str, **kwargs):
    """Connect with ?hello=1 and return (websocket, pid of the serving process)."""
    sep = "&" if "?" in path else "?"
    ws = stack.enter_context(connect(f"{server.url}{path}{sep}hello=1", open_timeout=10, **kwargs))
    hello = json.loads(ws.recv(timeout=10))
    return ws, hello["hello"]


def recv_all(ws, count: int, timeout: float = 10.0) -> list:
    return [ws.recv(timeout=timeout) for _ in range(count)]


def assert_nothing_more(ws, server: ServerProcess, channel: str) -> None:
    """A marker published after everything else is the very next message."""
    marker = f"marker-{time.monotonic_ns()}"
    assert publish(server, channel, marker)[0] == 200
    assert ws.recv(timeout=10) == marker


def wait_until(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


# -- in memory, one process ---------------------------------------------------------------


@pytest.fixture(scope="module")
def memory_app():
    server = start_server("pywsgi", app=APP)
    yield server
    server.stop()


def test_room_members_get_each_others_messages_sender_included(memory_app):
    with contextlib.ExitStack() as stack:
        room = [join(stack, memory_app, "/ws/room/alpha")[0] for _ in range(3)]
        other, _ = join(stack, memory_app, "/ws/room/beta")
        room[0].send("hi from 0")
        room[2].send("hi from 2")
        for ws in room:  # two senders on two connections: either order
            assert sorted(recv_all(ws, 2)) == ["hi from 0", "hi from 2"]
        assert_nothing_more(other, memory_app, "room:beta")


def test_echo_false_spares_the_sender(memory_app):
    with contextlib.ExitStack() as stack:
        sender, _ = join(stack, memory_app, "/ws/quiet/q1")
        listener, _ = join(stack, memory_app, "/ws/quiet/q1")
        sender.send("only for the others")
        assert listener.recv(timeout=10) == "only for the others"
        assert_nothing_more(sender, memory_app, "room:q1")


@pytest.mark.parametrize("compression", ["deflate", None])
def test_text_stays_text_and_bytes_stay_bytes_over_websocket(memory_app, compression):
    with contextlib.ExitStack() as stack:
        a, _ = join(stack, memory_app, "/ws/room/types", compression=compression)
        b, _ = join(stack, memory_app, "/ws/room/types", compression="deflate")
        c, _ = join(stack, memory_app, "/ws/room/types", compression=None)
        sent = ["text", b"\x00\xffbytes", "é✓ 🚀", b"", "", b"text-like bytes"]
        for message in sent:
            a.send(message)
        for ws in (a, b, c):
            got = recv_all(ws, len(sent))
            assert got == sent
            assert [type(m) for m in got] == [type(m) for m in sent]


def test_an_ordinary_view_publishes_to_websockets(memory_app):
    with contextlib.ExitStack() as stack:
        ws, _ = join(stack, memory_app, "/ws/room/news")
        status, body = publish(memory_app, "room:news", "from a view")
        assert (status, body["ok"], body["receivers"]) == (200, True, 1)
        assert ws.recv(timeout=10) == "from a view"
        assert publish(memory_app, "room:news", data=b"\x01\x02")[0] == 200
        assert ws.recv(timeout=10) == b"\x01\x02"


def test_callable_channel(memory_app):
    with contextlib.ExitStack() as stack:
        u1, _ = join(stack, memory_app, "/ws/user?user=u1")
        u2, _ = join(stack, memory_app, "/ws/user?user=u2")
        assert publish(memory_app, "user:u1", "for u1")[1]["receivers"] == 1
        assert u1.recv(timeout=10) == "for u1"
        assert_nothing_more(u2, memory_app, "user:u2")


def test_hooks_transform_authorise_and_drop(memory_app):
    with contextlib.ExitStack() as stack:
        boss, _ = join(stack, memory_app, "/ws/vetted/h?name=boss")
        ann, _ = join(stack, memory_app, "/ws/vetted/h?name=ann")
        boss.send("drop me")
        boss.send("shout hello")
        assert boss.recv(timeout=10) == ann.recv(timeout=10) == "HELLO"
        ann.send("secret plans")
        ann.send("dear {you}")
        ann.send(b"\x00bytes pass untouched")
        assert recv_all(boss, 3) == ["secret plans", "dear boss", b"\x00bytes pass untouched"]
        assert recv_all(ann, 2) == ["dear ann", b"\x00bytes pass untouched"]
        assert_nothing_more(ann, memory_app, "vetted:h")


def test_raising_hooks_close_only_their_connection_with_1011(memory_app):
    with contextlib.ExitStack() as stack:
        sender, _ = join(stack, memory_app, "/ws/vetted/boom?name=sender")
        fragile, _ = join(stack, memory_app, "/ws/vetted/boom?name=fragile")
        steady, _ = join(stack, memory_app, "/ws/vetted/boom?name=steady")
        sender.send("raise")  # before_publish raises: the sender is closed
        with pytest.raises(WSConnectionClosed) as info:
            sender.recv(timeout=10)
        assert info.value.rcvd.code == 1011
        steady.send("explode")  # before_deliver raises for "fragile" only
        with pytest.raises(WSConnectionClosed) as info:
            fragile.recv(timeout=10)
        assert info.value.rcvd.code == 1011
        assert steady.recv(timeout=10) == "explode"
        steady.send("still here")
        assert steady.recv(timeout=10) == "still here"


def test_no_subscription_outlives_its_connection(memory_app):
    """Normal closes, dropped TCP connections and protocol errors all unsubscribe."""
    with contextlib.ExitStack() as stack:
        keeper, _ = join(stack, memory_app, "/ws/room/keep")
        baseline = get_json(memory_app, "/stats")[1]["subscriptions"]
        normal = [stack.enter_context(connect(f"{memory_app.url}/ws/room/leak{i % 3}")) for i in range(10)]
        raw = [RawWebSocket(memory_app.port, f"/ws/room/leak{i % 3}") for i in range(10)]
        assert wait_until(lambda: get_json(memory_app, "/stats")[1]["subscriptions"] == baseline + 20)
        for ws in normal:
            ws.close()
        for i, client in enumerate(raw):
            if i % 2:
                client.sock.close()  # the TCP connection just goes away
            else:
                client.send_frame(0x1, b"\xff\xfe", mask=True)  # invalid UTF-8: the server fails it (1007)
        assert wait_until(lambda: get_json(memory_app, "/stats")[1]["subscriptions"] == baseline, 15)
        stats = get_json(memory_app, "/stats")[1]
        assert [path for path, _, _ in stats["connections"]].count("/ws/room/keep") == 1
        assert not [path for path, _, _ in stats["connections"] if "leak" in path]
        codes = sorted(code for path, code, _, _ in stats["closed"] if "leak" in path)
        assert codes.count(1000) == 10 and codes.count(1006) == 5 and codes.count(1007) == 5
        for client in raw:
            client.close()
        keeper.send("alive")
        assert keeper.recv(timeout=10) == "alive"


# -- through Redis, gunicorn with two workers ---------------------------------------------------


@pytest.fixture(scope="module")
def redis_gunicorn():
    """``gunicorn -k gevent -w 2 --preload``: the RedisPubSub object is made in the master."""
    from .redis_support import RedisServer

    redis = RedisServer()
    server = start_server("gunicorn", app=APP, env={"WSM_TEST_REDIS_URL": redis.url}, workers=2,
                          extra=["--preload"])
    yield redis, server
    server.stop()
    redis.close()


def on_both_workers(stack: contextlib.ExitStack, server: ServerProcess, path: str, per_worker: int = 2) -> dict:
    """Clients until each of the two workers serves ``per_worker`` of them (bounded).

    A worker that has enough is paused (SIGSTOP) while the next client connects,
    so that the other worker accepts it; the hello message names the serving pid.
    """
    clients: dict[int, list] = {}
    errors: list[BaseException] = []

    def add() -> None:
        try:
            ws, pid = join(stack, server, path)
            clients.setdefault(pid, []).append(ws)
        except BaseException as exc:  # reported below, from the test's own thread
            errors.append(exc)

    add()
    return on_two_workers(clients, add, errors, per_worker)


def test_clients_on_different_workers_all_receive(redis_gunicorn):
    redis, server = redis_gunicorn
    with contextlib.ExitStack() as stack:
        clients = on_both_workers(stack, server, "/ws/room/global")
        everyone = [ws for group in clients.values() for ws in group]
        assert len(clients) == 2
        # One subscriber connection per worker, named after its pid, whatever the client count.
        names = sorted(c["name"] for c in redis.pubsub_clients())
        assert names == sorted(f"wsmiddleware-sub-{pid}" for pid in clients)

        first_pid, second_pid = sorted(clients)
        clients[first_pid][0].send("text from a worker")
        clients[second_pid][0].send(b"\x00bytes from the other")
        assert redis.cli("PUBLISH", "room:global", "from redis-cli") == str(len(clients))
        assert publish(server, "room:global", "from a view")[0] == 200
        for ws in everyone:
            got = recv_all(ws, 4)
            # Each publisher's messages arrive in order; different publishers may interleave.
            assert sorted(got, key=repr) == sorted(
                ["text from a worker", b"\x00bytes from the other", "from redis-cli", "from a view"], key=repr)


def test_subscriptions_leave_redis_when_clients_leave(redis_gunicorn):
    redis, server = redis_gunicorn
    with contextlib.ExitStack() as stack:
        on_both_workers(stack, server, "/ws/room/ephemeral", per_worker=1)
        raw = RawWebSocket(server.port, "/ws/room/ephemeral")
        assert wait_until(lambda: redis.cli("PUBSUB", "NUMSUB", "room:ephemeral").split()[-1] == "2")
        raw.sock.close()
    assert wait_until(lambda: redis.cli("PUBSUB", "NUMSUB", "room:ephemeral").split()[-1] == "0", 15)


def test_redis_restart_with_websockets_open(redis_gunicorn):
    redis, server = redis_gunicorn
    with contextlib.ExitStack() as stack:
        clients = on_both_workers(stack, server, "/ws/room/phoenix", per_worker=1)
        everyone = [ws for group in clients.values() for ws in group]
        redis.kill()
        # Publishing while Redis is down fails with PubSubError, within the socket timeouts.
        for _ in range(4):
            status, body = publish(server, "room:phoenix", "lost")
            assert status == 503
            assert body["type"] == "PubSubError" and "unavailable" in body["error"]
        # The WebSockets stay open meanwhile, on both workers.
        for ws in everyone:
            ws.ping().wait(10)
        redis.start()
        # Each worker's reader reconnects and re-subscribes: probe until everyone hears.
        deadline = time.monotonic() + 15
        heard = {id(ws): False for ws in everyone}
        n = 0
        while not all(heard.values()) and time.monotonic() < deadline:
            n += 1
            publish(server, "room:phoenix", f"probe {n}")
            for ws in everyone:
                with contextlib.suppress(TimeoutError):
                    while not heard[id(ws)]:
                        heard[id(ws)] = ws.recv(timeout=0.2).startswith("probe")
        assert all(heard.values())
        # Same workers, same connections: no restart happened.
        redis.cli("PUBLISH", "room:phoenix", "after the restart")
        for ws in everyone:
            while (message := ws.recv(timeout=10)).startswith("probe"):
                pass
            assert message == "after the restart"
        assert sorted(c["name"] for c in redis.pubsub_clients()) == sorted(f"wsmiddleware-sub-{pid}" for pid in clients)
        for pid in clients:
            assert f"Booting worker with pid: {pid}" in server.log()
        assert server.log().count("Booting worker with pid") == 2


def test_text_and_bytes_through_redis_between_workers(redis_gunicorn):
    redis, server = redis_gunicorn
    with contextlib.ExitStack() as stack:
        clients = on_both_workers(stack, server, "/ws/room/typed", per_worker=1)
        (pid_a, (a,)), (pid_b, (b,)) = sorted((pid, group[:1]) for pid, group in clients.items())
        sent = ["é✓ 🚀", b"\xff\x00", "\x01tagged-looking text", b"", ""]
        for message in sent:
            a.send(message)
        for ws in (a, b):
            got = recv_all(ws, len(sent))
            assert got == sent
            assert [type(m) for m in got] == [type(m) for m in sent]


def test_socket_closed_clients_do_not_break_fan_out(redis_gunicorn):
    """A client vanishing mid-stream does not stop delivery to the others."""
    redis, server = redis_gunicorn
    with contextlib.ExitStack() as stack:
        ws, _ = join(stack, server, "/ws/room/vanish")
        ghosts = [RawWebSocket(server.port, "/ws/room/vanish") for _ in range(5)]
        for ghost in ghosts:
            ghost.sock.close()
        for i in range(20):
            redis.cli("PUBLISH", "room:vanish", f"m{i}")
        assert recv_all(ws, 20) == [f"m{i}" for i in range(20)]
