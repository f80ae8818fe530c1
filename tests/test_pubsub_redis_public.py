"""RedisPubSub on redis-py's public API: one named RESP2 subscriber connection, cooperation
with gevent with and without monkey-patching, re-subscription after a restart.

The test process itself is NOT monkey-patched (redis-py's calls go to the hub's
threadpool there); a child process covers the monkey-patched case. Every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import gevent
import gevent.monkey
import pytest

from wsmiddleware import PubSubError
from wsmiddleware.pubsub import RedisPubSub

from .redis_support import REDIS_CLI, REDIS_SERVER, RedisServer
from .support import PYTHON, ROOT, Inbox
from .test_pubsub_redis import wait_for  # noqa: E402

PACKAGE = ROOT / "wsmiddleware" / "pubsub"
unpatched = pytest.mark.skipif(gevent.monkey.is_module_patched("socket"),
                               reason="needs a process that is not monkey-patched")


def all_clients(server: RedisServer) -> list[dict[str, str]]:
    """``CLIENT LIST`` (every type) without redis-cli's own connection."""
    lines = server.cli("CLIENT", "LIST").splitlines()
    clients = [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in lines if line]
    return [c for c in clients if not c.get("cmd", "").startswith("client")]


class Ticker:
    """A greenlet that notes the time every 10 ms: gaps show when the hub was blocked."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.greenlet = gevent.spawn(self._run)
        gevent.sleep(0.05)

    def _run(self) -> None:
        while True:
            self.times.append(time.monotonic())
            gevent.sleep(0.01)

    def during(self, start: float, end: float) -> tuple[int, float]:
        """(ticks, longest gap between ticks) within [start, end]."""
        inside = [start] + [t for t in self.times if start <= t <= end] + [end]
        return len(inside) - 2, max(b - a for a, b in zip(inside, inside[1:], strict=False))

    def stop(self) -> None:
        self.greenlet.kill()


@pytest.fixture
def hub_errors(monkeypatch):
    """Whatever gevent's hub would print (errors of greenlets, callbacks, threadpool tasks)."""
    hub = gevent.get_hub()
    seen: list[tuple] = []
    original = hub.handle_error

    def record(context, kind, value, tb):
        if kind is not None and not issubclass(kind, (gevent.GreenletExit, SystemExit)):
            seen.append((context, kind, value))
        return original(context, kind, value, tb)

    monkeypatch.setattr(hub, "handle_error", record)
    return seen


# -- the code itself ----------------------------------------------------------------------


def test_no_private_redis_py_names_in_the_adapter():
    """No subclass of redis-py's connections, no ``_connect``/``_sock``/``connection_kwargs``."""
    sources = {path.name: path.read_text() for path in PACKAGE.glob("*redis*.py")}
    assert {"redis.py", "_redis_io.py", "_redis_reader.py", "_redis_wire.py"} <= set(sources)
    for name, text in sources.items():
        code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        for private in (r"\._sock\b", r"\._connect\b", r"connection_kwargs", r"\._parser\b", r"redis\.connection\.",
                        r"pack_command"):
            assert not re.search(private, code), (name, private)
    # redis-py is called from one module only.
    callers = [name for name, text in sources.items() if re.search(r"^\s*import redis\b", text, re.M)]
    assert callers == ["_redis_io.py"]


def test_nothing_is_created_before_first_use_then_one_named_resp2_subscriber(fresh_redis):
    pubsub = RedisPubSub(fresh_redis.url)
    try:
        assert all_clients(fresh_redis) == []
        assert not pubsub.connected
        inboxes = [Inbox() for _ in range(50)]
        for i, inbox in enumerate(inboxes):
            pubsub.subscribe(f"named:{i}", inbox)
        pubsub.subscribe("named-pattern:*", inboxes[0])
        for i in range(10):
            assert pubsub.publish(f"named:{i}", "x") == 1  # 50 local subscribers, one Redis subscriber
        clients = all_clients(fresh_redis)
        subscribers = [c for c in clients if c.get("name") == f"wsmiddleware-sub-{os.getpid()}"]
        assert len(subscribers) == 1
        subscriber = subscribers[0]
        assert (subscriber["sub"], subscriber["psub"]) == ("50", "1")
        if "resp" in subscriber:  # CLIENT LIST shows the protocol from Redis 7 on
            assert subscriber["resp"] == "2"
        # The others are the small publishing pool: no subscriptions, not named like the subscriber.
        others = [c for c in clients if c is not subscriber]
        assert others and all(c["sub"] == c["psub"] == "0" for c in others)
        assert len(others) <= 5
        assert wait_for(lambda: all(len(inbox.got) >= 1 for inbox in inboxes[:10]))
    finally:
        pubsub.close()
    assert wait_for(lambda: all_clients(fresh_redis) == [], 5)


# -- not monkey-patched: redis-py in the hub's threadpool ----------------------------------------


@unpatched
def test_unpatched_publish_during_client_pause_does_not_block_other_greenlets(fresh_redis):
    pubsub = RedisPubSub(fresh_redis.url)
    inbox = Inbox()
    try:
        pubsub.subscribe("paused", inbox)
        pubsub.publish("paused", "warm-up")  # connections exist: the pause hits the commands
        assert wait_for(lambda: inbox.messages() == ["warm-up"])
        ticker = Ticker()
        try:
            assert fresh_redis.cli("CLIENT", "PAUSE", "500") == "OK"
            start = time.monotonic()
            with gevent.Timeout(10):
                assert pubsub.publish("paused", "after the pause") == 1
            end = time.monotonic()
        finally:
            ticker.stop()
        ticks, gap = ticker.during(start, end)
        assert end - start > 0.25, "Redis was not paused: the test proves nothing"
        assert gap < 0.2, f"the hub stood still for {gap:.3f} s during a publish"
        assert ticks >= 10
        assert wait_for(lambda: inbox.messages() == ["warm-up", "after the pause"])
    finally:
        pubsub.close()


@unpatched
def test_unpatched_subscribe_during_client_pause_waits_for_redis_not_the_hub(fresh_redis, caplog):
    caplog.set_level(logging.WARNING, logger="wsmiddleware.pubsub.redis")
    pubsub = RedisPubSub(fresh_redis.url, subscribe_timeout=5.0)
    first, second = Inbox(), Inbox()
    try:
        pubsub.subscribe("before", first)
        ticker = Ticker()
        try:
            assert fresh_redis.cli("CLIENT", "PAUSE", "500") == "OK"
            start = time.monotonic()
            with gevent.Timeout(10):
                pubsub.subscribe("during", second)
            end = time.monotonic()
        finally:
            ticker.stop()
        ticks, gap = ticker.during(start, end)
        # subscribe() returned once Redis confirmed, that is after the pause...
        assert end - start > 0.25
        assert "during" in fresh_redis.cli("PUBSUB", "CHANNELS", "during")
        # ...and the rest of the process ran meanwhile.
        assert gap < 0.2, f"the hub stood still for {gap:.3f} s during a subscribe"
        assert ticks >= 10
        pubsub.publish("during", "hello")
        assert wait_for(lambda: second.messages() == ["hello"])
    finally:
        pubsub.close()
    assert not [r for r in caplog.records if "did not confirm" in r.getMessage()]


@unpatched
def test_each_subscribe_returns_confirmed_and_the_next_message_arrives(pubsub_factory, caplog):
    """The confirmation may come back before the thread that sent SUBSCRIBE returns."""
    caplog.set_level(logging.WARNING, logger="wsmiddleware.pubsub.redis")
    pubsub = pubsub_factory()
    inbox = Inbox()
    names = [f"quick:{i}" for i in range(60)] + [f"quickp{i}:*" for i in range(15)]
    slowest = 0.0
    for name in names:
        start = time.monotonic()
        pubsub.subscribe(name, inbox)
        slowest = max(slowest, time.monotonic() - start)
        # Published right after subscribe() returned: must arrive (patterns too).
        pubsub.publish(name.replace("*", "x"), name)
    assert wait_for(lambda: len(inbox.got) == len(names))
    assert sorted(inbox.messages()) == sorted(names)
    assert slowest < 1.0  # far from subscribe_timeout (2 s): confirmations were not missed
    assert not [r for r in caplog.records if "did not confirm" in r.getMessage()]


@pytest.fixture
def pubsub_factory(redis_server):
    made: list[RedisPubSub] = []

    def make(**options) -> RedisPubSub:
        instance = RedisPubSub(redis_server.url, reconnect_delay=0.05, max_reconnect_delay=0.5, **options)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.close()


@unpatched
def test_close_frees_its_thread_at_once(pubsub_factory, redis_server):
    """A closed instance's reader does not keep a hub thread waiting for ``ping_interval``."""
    threadpool = gevent.get_hub().threadpool
    for i in range(threadpool.maxsize + 5):
        instance = pubsub_factory(ping_interval=30.0)
        instance.subscribe(f"short:{i}", Inbox())
        instance.close()
    last = pubsub_factory()
    inbox = Inbox()
    start = time.monotonic()
    with gevent.Timeout(10):
        last.subscribe("short:last", inbox)
        last.publish("short:last", "still quick")
    assert wait_for(lambda: inbox.messages() == ["still quick"], 5)
    assert time.monotonic() - start < 1.5
    assert wait_for(lambda: len(redis_server.pubsub_clients()) == 1, 5)


@unpatched
def test_outages_and_closing_print_nothing_from_the_hub(fresh_redis, hub_errors, caplog):
    caplog.set_level(logging.INFO, logger="wsmiddleware.pubsub.redis")
    pubsub = RedisPubSub(fresh_redis.url, reconnect_delay=0.05, max_reconnect_delay=0.3)
    inbox = Inbox()
    try:
        pubsub.subscribe("quiet", inbox)
        fresh_redis.kill()  # the reader's thread is waiting for data: it fails there
        assert wait_for(lambda: not pubsub.connected, 5)
        with gevent.Timeout(10), pytest.raises(PubSubError):
            pubsub.publish("quiet", "lost")
        gevent.sleep(0.5)  # failed reconnection attempts, in threads
        fresh_redis.start()
        assert wait_for(lambda: pubsub.connected, 10)
        pubsub.publish("quiet", "back")
        assert wait_for(lambda: inbox.messages() == ["back"])
    finally:
        pubsub.close()  # while the reader's thread waits for data
    gevent.sleep(0.2)
    assert hub_errors == []


# -- re-subscription ----------------------------------------------------------------------


def test_redis_restart_resubscribes_every_channel_and_pattern_in_batches(fresh_redis, caplog):
    caplog.set_level(logging.INFO, logger="wsmiddleware.pubsub.redis")
    pubsub = RedisPubSub(fresh_redis.url, reconnect_delay=0.05, max_reconnect_delay=0.5)
    try:
        inboxes = {f"many:{i}": Inbox() for i in range(600)}  # more than one SUBSCRIBE batch (256)
        for name, inbox in inboxes.items():
            pubsub.subscribe(name, inbox)
        patterns = {f"pat{i}:*": Inbox() for i in range(5)}
        for name, inbox in patterns.items():
            pubsub.subscribe(name, inbox)
        assert fresh_redis.pubsub_clients()[0]["sub"] == "600"

        fresh_redis.kill()
        assert wait_for(lambda: not pubsub.connected, 5)
        fresh_redis.start()
        assert wait_for(lambda: pubsub.connected, 10)

        def resubscribed():
            clients = fresh_redis.pubsub_clients()
            return len(clients) == 1 and (clients[0]["sub"], clients[0]["psub"]) == ("600", "5")

        assert wait_for(resubscribed, 10)
        assert fresh_redis.pubsub_clients()[0]["name"] == f"wsmiddleware-sub-{os.getpid()}"
        for i in (0, 255, 256, 599):
            assert pubsub.publish(f"many:{i}", f"m{i}") == 1
        for i in range(5):
            assert pubsub.publish(f"pat{i}:x", f"p{i}") == 1
        assert wait_for(lambda: all(inboxes[f"many:{i}"].messages() == [f"m{i}"] for i in (0, 255, 256, 599)))
        assert wait_for(lambda: all(patterns[f"pat{i}:*"].messages() == [f"p{i}"] for i in range(5)))
    finally:
        pubsub.close()
    assert any("re-subscribed 600 channel(s) and 5 pattern(s)" in r.getMessage() for r in caplog.records)


# -- other URLs and the monkey-patched case ---------------------------------------------------------


@pytest.fixture
def unix_redis():
    """A redis-server listening on a Unix socket only (``--port 0``)."""
    directory = Path(tempfile.mkdtemp(prefix="wsm-redis-unix-"))
    path = directory / "redis.sock"
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--unixsocket", str(path), "--unixsocketperm", "700", "--save", "",
         "--appendonly", "no", "--dir", str(directory), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def cli(*args: str) -> str:
        result = subprocess.run([REDIS_CLI, "-s", str(path), *args], capture_output=True, timeout=5)
        return result.stdout.decode(errors="replace").strip()

    deadline = time.monotonic() + 10
    while not (path.exists() and cli("PING") == "PONG"):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("redis-server did not start on a Unix socket")
        time.sleep(0.05)
    yield path, cli
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    shutil.rmtree(directory, ignore_errors=True)


def test_unix_socket_url(unix_redis):
    path, cli = unix_redis
    pubsub = RedisPubSub(f"unix://{path}")
    try:
        inbox = Inbox()
        pubsub.subscribe("over:unix", inbox)
        assert pubsub.publish("over:unix", b"\x00binary") == 1
        assert wait_for(lambda: inbox.messages() == [b"\x00binary"])
        assert f"name=wsmiddleware-sub-{os.getpid()}" in cli("CLIENT", "LIST", "TYPE", "pubsub")
    finally:
        pubsub.close()


PATCHED_SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()

    import json, subprocess, sys, time
    import gevent
    from wsmiddleware.pubsub import RedisPubSub

    def wait_for(predicate, timeout=10.0):
        with gevent.Timeout(timeout, False):
            while not predicate():
                gevent.sleep(0.02)
        return predicate()

    url, cli = sys.argv[1], sys.argv[2:]
    pubsub = RedisPubSub(url)
    got = []
    pubsub.subscribe("patched", lambda channel, message: got.append(message))
    pubsub.publish("patched", "hello")
    assert wait_for(lambda: got == ["hello"])
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    gevent.sleep(0.05)
    subprocess.run(cli + ["CLIENT", "PAUSE", "500"], check=True, capture_output=True, timeout=10)
    start = time.monotonic()
    receivers = pubsub.publish("patched", "after the pause")
    end = time.monotonic()
    ticker.kill()
    inside = [start] + [t for t in ticks if start <= t <= end] + [end]
    ok = wait_for(lambda: got == ["hello", "after the pause"])
    state = pubsub._state
    print(json.dumps({"took": end - start, "gap": max(b - a for a, b in zip(inside, inside[1:], strict=False)),
                      "receivers": receivers, "ok": ok, "inline": state.cooperative and state.threadpool is None}))
    pubsub.close()
""")


def test_monkey_patched_process_runs_redis_py_inline_and_cooperatively(fresh_redis):
    cli = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(fresh_redis.port)]
    result = subprocess.run([PYTHON, "-c", PATCHED_SCRIPT, fresh_redis.url, *cli], cwd=str(ROOT),
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert report["inline"] and report["ok"] and report["receivers"] == 1
    assert report["took"] > 0.25, "Redis was not paused: the test proves nothing"
    assert report["gap"] < 0.2, report
    assert b"Traceback" not in result.stderr, result.stderr.decode()
