"""RedisPubSub in this process, against a real redis-server (and redis-cli as a foreign client)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import textwrap

import gevent
import pytest

from wsmiddleware import PubSubError
from wsmiddleware.pubsub import MemoryPubSub, RedisPubSub
from wsmiddleware.pubsub.redis import decode_message, encode_message

from .redis_support import RedisServer
from .support import PYTHON, ROOT, Inbox, free_port


def wait_for(predicate, timeout: float = 10.0, step: float = 0.02) -> bool:
    """Let the hub run until ``predicate()`` holds; False after ``timeout`` seconds."""
    with gevent.Timeout(timeout, False):
        while not predicate():
            gevent.sleep(step)
        return True
    return bool(predicate())


@pytest.fixture
def pubsub(redis_server):
    instance = RedisPubSub(redis_server.url, reconnect_delay=0.05, max_reconnect_delay=0.5)
    yield instance
    instance.close()


def test_fan_out_to_500_subscribers_once_each_in_order_per_publisher(pubsub, redis_server):
    inboxes = [Inbox() for _ in range(500)]
    for inbox in inboxes:
        pubsub.subscribe("big:room", inbox)
    per_publisher = 40

    def publish(name):
        for i in range(per_publisher):
            pubsub.publish("big:room", f"{name}:{i}")

    gevent.joinall([gevent.spawn(publish, name) for name in ("a", "b", "c")], timeout=30, raise_error=True)
    for i in range(5):  # a foreign publisher interleaved
        assert redis_server.publish_raw("big:room", f"cli:{i}".encode()) == 1
    total = 3 * per_publisher + 5
    assert wait_for(lambda: all(len(inbox.got) >= total for inbox in inboxes), 30)
    gevent.sleep(0.1)
    for inbox in inboxes:
        got = inbox.messages()
        assert len(got) == total and len(set(got)) == total
        for name, count in (("a", per_publisher), ("b", per_publisher), ("c", per_publisher), ("cli", 5)):
            assert [m for m in got if m.startswith(name + ":")] == [f"{name}:{i}" for i in range(count)]


TYPED = ["", "plain text", "é✓ 🚀", "\x01starts with the text tag", "\x03looks like a tagged origin" + "x" * 20,
         b"", b"\x00\xff\xfe\x01", b"valid utf-8 but binary", b"\x01\x02\x03\x04" * 10]


def test_text_stays_text_and_bytes_stay_bytes_through_redis(pubsub):
    inbox = Inbox()
    pubsub.subscribe("types", inbox)
    for message in TYPED:
        pubsub.publish("types", message)
    assert wait_for(lambda: len(inbox.got) == len(TYPED))
    assert inbox.messages() == TYPED
    assert [type(m) for m in inbox.messages()] == [type(m) for m in TYPED]
    assert all(channel == "types" for channel, _ in inbox.got)


@pytest.mark.parametrize("message", TYPED + ["x" * 70000, bytes(range(256)) * 300])
def test_wire_format_round_trips(message):
    for origin in (None, os.urandom(16)):
        decoded, got_origin = decode_message(encode_message(message, origin))
        assert decoded == message and type(decoded) is type(message)
        assert got_origin == origin


def test_foreign_publishers_reach_subscribers_with_a_sensible_type(pubsub, redis_server):
    inbox = Inbox()
    pubsub.subscribe("room:x", inbox)
    assert redis_server.cli("PUBLISH", "room:x", "hello from redis-cli") == "1"
    redis_server.publish_raw("room:x", "é✓".encode())
    redis_server.publish_raw("room:x", b"\xff\xfe not utf-8")
    redis_server.publish_raw("room:x", b"\x02explicitly binary")
    redis_server.publish_raw("room:x", b"\x01explicitly text")
    assert wait_for(lambda: len(inbox.got) == 5)
    assert inbox.messages() == ["hello from redis-cli", "é✓", b"\xff\xfe not utf-8", b"explicitly binary", "explicitly text"]


PATTERNS = ["room:*", "room:?", "room:[0-9]*", "room:[!a-c]*", "*:lobby", "a[]]b", "back\\slash*", "odd[", "x[*]y",
            "caret[^]x", "plain"]
CHANNELS = ["room:1", "room:12", "room:a", "room:d", "room:", "x:lobby", "a]b", "back\\slash/1", "odd[", "x*y",
            "xay", "caret^x", "caret[x", "plain", "Room:1"]


def test_patterns_mean_the_same_in_memory_and_in_redis(pubsub, redis_server):
    memory = MemoryPubSub()
    through_redis = {pattern: Inbox() for pattern in PATTERNS}
    in_memory = {pattern: Inbox() for pattern in PATTERNS}
    for pattern in PATTERNS:
        pubsub.subscribe(pattern, through_redis[pattern], pattern=True)
        memory.subscribe(pattern, in_memory[pattern], pattern=True)
    for channel in CHANNELS:
        pubsub.publish(channel, channel)
        memory.publish(channel, channel)
    end = Inbox()
    pubsub.subscribe("end", end)
    pubsub.publish("end", "end")
    assert wait_for(lambda: end.got)
    for pattern in PATTERNS:
        assert through_redis[pattern].messages() == in_memory[pattern].messages(), pattern
        assert [c for c, _ in through_redis[pattern].got] == through_redis[pattern].messages()
    assert in_memory["room:*"].messages() == ["room:1", "room:12", "room:a", "room:d", "room:"]


def test_one_subscriber_connection_per_process_whatever_the_subscriptions(fresh_redis):
    pubsub = RedisPubSub(fresh_redis.url)
    try:
        inboxes = [Inbox() for _ in range(300)]
        for i, inbox in enumerate(inboxes):
            pubsub.subscribe(f"many:{i % 200}", inbox)
        for i in range(5):
            pubsub.subscribe(f"pat{i}:*", inboxes[i])
        for i in range(20):
            pubsub.publish(f"many:{i}", "x")
        clients = fresh_redis.pubsub_clients()
        assert len(clients) == 1
        assert clients[0]["name"] == f"wsmiddleware-sub-{os.getpid()}"
        assert (clients[0]["sub"], clients[0]["psub"]) == ("200", "5")
    finally:
        pubsub.close()
    assert wait_for(lambda: fresh_redis.pubsub_clients() == [], 5)


def test_unsubscribing_the_last_local_subscriber_unsubscribes_redis(pubsub, redis_server):
    alice, bob = Inbox(), Inbox()
    pubsub.subscribe("leave:test", alice)
    pubsub.subscribe("leave:test", bob)
    pubsub.subscribe("leave:*", alice)
    assert redis_server.cli("PUBSUB", "NUMSUB", "leave:test").split() == ["leave:test", "1"]
    pubsub.unsubscribe("leave:test", alice)
    assert pubsub.publish("leave:test", "bob only") == 2  # the channel and the pattern
    assert wait_for(lambda: bob.messages() == ["bob only"] and alice.messages() == ["bob only"])
    pubsub.unsubscribe("leave:test", bob)
    pubsub.unsubscribe("leave:*", alice)
    assert pubsub.subscription_count() == 0
    assert wait_for(lambda: redis_server.cli("PUBSUB", "NUMSUB", "leave:test").split() == ["leave:test", "0"], 5)
    assert pubsub.publish("leave:test", "nobody") == 0


def test_sender_is_spared_its_own_message_through_redis(pubsub, redis_server):
    alice, bob = Inbox(), Inbox()
    pubsub.subscribe("chat:r", alice)
    pubsub.subscribe("chat:r", bob)
    pubsub.publish("chat:r", "from alice", sender=alice)
    pubsub.publish("chat:r", b"binary from bob", sender=bob)
    redis_server.publish_raw("chat:r", b"from outside")
    assert wait_for(lambda: len(alice.got) == 2 and len(bob.got) == 2)
    gevent.sleep(0.05)
    assert alice.messages() == [b"binary from bob", "from outside"]
    assert bob.messages() == ["from alice", "from outside"]


def test_redis_restart_is_survived_and_publish_fails_promptly_meanwhile(fresh_redis, caplog):
    caplog.set_level(logging.INFO, logger="wsmiddleware.pubsub.redis")
    pubsub = RedisPubSub(fresh_redis.url, reconnect_delay=0.05, max_reconnect_delay=0.5)
    try:
        inbox, pattern_inbox = Inbox(), Inbox()
        pubsub.subscribe("live", inbox)
        pubsub.subscribe("live*", pattern_inbox)
        pubsub.publish("live", "before")
        assert wait_for(lambda: inbox.messages() == ["before"] and pattern_inbox.messages() == ["before"])

        fresh_redis.kill()
        assert wait_for(lambda: not pubsub.connected, 5)
        for _ in range(3):
            with gevent.Timeout(10):  # a bound, not a speed target: publish must not hang
                with pytest.raises(PubSubError, match="unavailable"):
                    pubsub.publish("live", "during the outage")

        later = Inbox()
        pubsub.subscribe("joined-during-outage", later)  # returns although Redis is down
        fresh_redis.start()
        probes = []

        def probe_arrived():
            if "probe" in inbox.messages():
                return True
            try:
                probes.append(pubsub.publish("live", "probe"))
            except PubSubError:
                pass
            return False

        assert wait_for(probe_arrived, 15, step=0.1)
        pubsub.publish("joined-during-outage", "hi")
        assert wait_for(lambda: later.messages() == ["hi"] and "probe" in pattern_inbox.messages())
        assert "during the outage" not in inbox.messages()
    finally:
        pubsub.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "unavailable" in r.getMessage()]
    assert len(errors) == 1  # logged once per outage, not once per retry
    assert any(r.levelno == logging.WARNING and "is back" in r.getMessage() for r in caplog.records)


def test_redis_down_at_start_then_up(caplog):
    port = free_port()
    pubsub = RedisPubSub(f"redis://127.0.0.1:{port}/0", reconnect_delay=0.05, max_reconnect_delay=0.3)
    server = None
    try:
        inbox = Inbox()
        with gevent.Timeout(10):
            pubsub.subscribe("early", inbox)
            with pytest.raises(PubSubError, match=f"127.0.0.1:{port}"):
                pubsub.publish("early", "nobody listens")
        server = RedisServer(port)
        assert wait_for(lambda: pubsub.connected, 10)
        pubsub.publish("early", "now")
        assert wait_for(lambda: inbox.messages() == ["now"])
    finally:
        pubsub.close()
        if server is not None:
            server.close()


def test_silent_redis_is_detected_by_ping_and_publish_times_out(fresh_redis, caplog):
    """SIGSTOP: the TCP connection stays up but Redis answers nothing."""
    caplog.set_level(logging.INFO, logger="wsmiddleware.pubsub.redis")
    pubsub = RedisPubSub(fresh_redis.url, ping_interval=0.2, reconnect_delay=0.05, max_reconnect_delay=0.3,
                         socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        inbox = Inbox()
        pubsub.subscribe("quiet", inbox)
        gevent.sleep(0.6)  # a few idle PING round trips on a healthy connection
        assert pubsub.connected
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        fresh_redis.proc.send_signal(signal.SIGSTOP)
        try:
            with gevent.Timeout(10):
                with pytest.raises(PubSubError):
                    pubsub.publish("quiet", "lost")
            assert wait_for(lambda: not pubsub.connected, 10)
        finally:
            fresh_redis.proc.send_signal(signal.SIGCONT)

        def flowing():
            if "back" in inbox.messages():
                return True
            try:
                pubsub.publish("quiet", "back")
            except PubSubError:
                pass
            return False

        assert wait_for(flowing, 15, step=0.1)
    finally:
        pubsub.close()
    assert any("no answer to PING" in r.getMessage() or "Timeout" in r.getMessage() for r in caplog.records
               if r.levelno == logging.ERROR)


def test_close_releases_the_connection(fresh_redis):
    pubsub = RedisPubSub(fresh_redis.url)
    inbox = Inbox()
    pubsub.subscribe("c", inbox)
    assert len(fresh_redis.pubsub_clients()) == 1
    pubsub.close()
    assert pubsub.subscription_count() == 0
    with pytest.raises(PubSubError, match="closed"):
        pubsub.publish("c", "x")
    assert wait_for(lambda: fresh_redis.pubsub_clients() == [], 5)


FORK_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import gevent
    from wsmiddleware.pubsub import RedisPubSub

    def wait_for(predicate, timeout=10.0):
        with gevent.Timeout(timeout, False):
            while not predicate():
                gevent.sleep(0.02)
        return predicate()

    pubsub = RedisPubSub(sys.argv[1], reconnect_delay=0.05)
    got = []
    pubsub.subscribe("fork:all", lambda channel, message: got.append(message))
    pubsub.publish("fork:all", "before")
    assert wait_for(lambda: got == ["before"])
    read_end, write_end = os.pipe()
    pid = gevent.fork()
    if pid == 0:
        pubsub.subscribe("fork:child", lambda channel, message: got.append("child:" + message))
        pubsub.publish("fork:all", "child ready")
        ok = wait_for(lambda: "after" in got and "child:direct" in got)
        os.write(write_end, json.dumps({"pid": os.getpid(), "got": got, "ok": ok}).encode())
        os._exit(0)
    assert wait_for(lambda: "child ready" in got)
    pubsub.publish("fork:child", "direct")
    pubsub.publish("fork:all", "after")
    child = json.loads(os.read(read_end, 65536))
    os.waitpid(pid, 0)
    pubsub.publish("fork:all", "final")
    assert wait_for(lambda: "final" in got)
    print(json.dumps({"pid": os.getpid(), "got": got, "child": child}))
""")


def test_a_forked_child_gets_its_own_connection_and_the_parent_keeps_its_own(fresh_redis):
    result = subprocess.run([PYTHON, "-c", FORK_SCRIPT, fresh_redis.url], cwd=str(ROOT), capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    child = report["child"]
    assert child["ok"]
    assert child["pid"] != report["pid"]
    assert report["got"] == ["before", "child ready", "after", "final"]
    assert child["got"] == ["before", "child ready", "child:direct", "after"]
