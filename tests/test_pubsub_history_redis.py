"""RedisPubSub history in Redis Streams: atomic offsets across processes, the keys it
keeps, and the lossless bus (a worker's reader fills its gaps from the streams)."""

from __future__ import annotations

import logging
import subprocess
import textwrap

import gevent
import pytest

from wsmiddleware import PubSubError
from wsmiddleware.pubsub import Position, RedisPubSub

from .redis_support import RedisServer
from .support import PYTHON, ROOT
from .test_pubsub_history import Positioned
from .test_pubsub_redis import wait_for

PUBLISHER = textwrap.dedent("""
    import sys, time
    from wsmiddleware import PubSubError
    from wsmiddleware.pubsub import RedisPubSub
    url, channel, name, count, pause = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    pubsub = RedisPubSub(url, history=100000, socket_timeout=1.0, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 60
    for i in range(1, count + 1):
        while True:  # the message id makes sending again safe
            try:
                pubsub.publish(channel, f"{name}:{i}", message_id=f"{name}:{i}")
                break
            except PubSubError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if pause:
            time.sleep(pause)
    pubsub.close()
""")


def publisher(url: str, channel: str, name: str, count: int, pause: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-c", PUBLISHER, url, channel, name, str(count), str(pause)], cwd=str(ROOT))


@pytest.fixture
def make(request):
    made = []

    def factory(url, **options):
        options.setdefault("reconnect_delay", 0.05)
        options.setdefault("max_reconnect_delay", 0.3)
        instance = RedisPubSub(url, **options)
        made.append(instance)
        return instance

    yield factory
    for instance in made:
        instance.close()


def test_offsets_are_atomic_across_processes_publishing_at_once(redis_server, make):
    """Three publishers (two other processes and this one) at once: one offset per
    message, none twice, none skipped, the same order for every subscriber."""
    redis_server.cli("FLUSHALL")
    first, second = make(redis_server.url, history=1000), make(redis_server.url, history=1000)
    a, b = Positioned(), Positioned()
    first.subscribe("atomic", a)
    second.subscribe("atomic", b)
    others = [publisher(redis_server.url, "atomic", name, 150) for name in ("p1", "p2")]
    for i in range(1, 151):
        first.publish("atomic", f"me:{i}")
        if i % 10 == 0:
            gevent.sleep(0.001)
    for proc in others:
        assert proc.wait(30) == 0
    assert wait_for(lambda: len(a.got) == 450 and len(b.got) == 450, 10)
    assert a.offsets() == list(range(1, 451))
    assert a.got == b.got
    for name in ("me", "p1", "p2"):
        assert [m for m in a.messages() if m.startswith(name + ":")] == [f"{name}:{i}" for i in range(1, 151)]
    stored = first.history("atomic")
    assert stored.messages == [(position.offset, message) for message, position in a.got]
    assert redis_server.cli("XLEN", "wsm:{atomic}:history") == "450"
    assert redis_server.cli("HGET", "wsm:{atomic}:meta", "head") == "450"
    assert redis_server.cli("HGET", "wsm:{atomic}:meta", "epoch") == a.got[0][1].epoch


def test_the_stream_is_trimmed_near_n_and_reads_keep_exactly_n(redis_server, make):
    redis_server.cli("FLUSHALL")
    pubsub = make(redis_server.url, history=50, key_prefix="app1:")
    for i in range(1000):
        pubsub.publish("trim", str(i))
    assert 50 <= int(redis_server.cli("XLEN", "app1:{trim}:history")) < 1000
    assert [m for _, m in pubsub.history("trim").messages] == [str(i) for i in range(950, 1000)]


def test_a_dropped_subscriber_connection_loses_nothing(redis_server, make, caplog):
    """CLIENT KILL of the subscriber connection while another process publishes: the
    reader reconnects and delivers the gap from the stream, in order, once."""
    redis_server.cli("FLUSHALL")
    pubsub = make(redis_server.url, history=10000)
    sub = Positioned()
    pubsub.subscribe("blip", sub)
    proc = publisher(redis_server.url, "blip", "m", 600, 0.002)
    caplog.set_level(logging.INFO, "wsmiddleware.pubsub.redis")
    kills = 0
    with gevent.Timeout(30):
        while proc.poll() is None:
            gevent.sleep(0.15)
            if len(sub.got) > 30 * (kills + 1) and kills < 3:
                assert redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub") != "0"
                kills += 1
    assert proc.returncode == 0 and kills >= 2
    assert wait_for(lambda: len(sub.got) >= 600, 10)
    gevent.sleep(0.2)
    assert sub.messages() == [f"m:{i}" for i in range(1, 601)]
    assert sub.offsets() == list(range(1, 601))
    assert sum("unavailable" in r.getMessage() for r in caplog.records) >= 2


def test_a_redis_crash_and_restart_with_persistence_loses_nothing(make, caplog):
    """kill -9 of redis-server (append-only file synced per write), restarted on the
    same port: every connected subscriber gets every message, in order, once."""
    server = RedisServer(persistent=True)
    try:
        subscribers = [make(server.url, history=10000) for _ in range(2)]
        inboxes = [Positioned() for _ in subscribers]
        for pubsub, inbox in zip(subscribers, inboxes, strict=True):
            pubsub.subscribe("crash", inbox)
        proc = publisher(server.url, "crash", "m", 400, 0.003)
        with gevent.Timeout(20):
            while len(inboxes[0].got) < 150:
                gevent.sleep(0.01)
        server.kill()
        gevent.sleep(0.4)
        server.start()
        assert proc.wait(60) == 0
        for inbox in inboxes:
            assert wait_for(lambda inbox=inbox: len(inbox.got) >= 400, 15)
        gevent.sleep(0.2)
        for inbox in inboxes:
            assert inbox.messages() == [f"m:{i}" for i in range(1, 401)]
            assert len({position.epoch for _, position in inbox.got}) == 1
    finally:
        server.close()


def test_flushall_is_a_new_epoch_not_recovered_then_live(redis_server, make, caplog):
    redis_server.cli("FLUSHALL")
    pubsub = make(redis_server.url, history=100)
    sub = Positioned()
    pubsub.subscribe("flushed", sub)
    for i in range(3):
        pubsub.publish("flushed", f"old{i}")
    assert wait_for(lambda: len(sub.got) == 3, 5)
    old = sub.got[-1][1]
    assert redis_server.cli("FLUSHALL") == "OK"
    caplog.set_level(logging.WARNING, "wsmiddleware.pubsub.redis")
    pubsub.publish("flushed", "new1")
    assert wait_for(lambda: len(sub.got) == 4, 5)
    assert sub.got[3][1].epoch != old.epoch and sub.got[3][1].offset == 1
    assert any("was lost" in r.getMessage() for r in caplog.records)
    late = Positioned()
    recovery = pubsub.resume("flushed", late, since=old)
    assert recovery.recovered is False and recovery.position == sub.got[3][1]
    pubsub.publish("flushed", "new2")
    assert wait_for(lambda: late.messages() == ["new2"], 5)


def test_foreign_publishers_reach_history_channels_without_a_position(redis_server, make):
    redis_server.cli("FLUSHALL")
    pubsub = make(redis_server.url, history=10)
    sub = Positioned()
    pubsub.subscribe("foreign", sub)
    pubsub.publish("foreign", "ours")
    assert wait_for(lambda: len(sub.got) == 1, 5)
    assert redis_server.cli("PUBLISH", "foreign", "from redis-cli") == "1"
    pubsub.publish("foreign", "ours again")
    assert wait_for(lambda: len(sub.got) == 3, 5)
    assert sub.got[1] == ("from redis-cli", None)
    assert [p.offset for _, p in (sub.got[0], sub.got[2])] == [1, 2]


def test_a_publish_that_succeeds_wakes_a_reader_waiting_out_its_backoff(make):
    """After an outage the reader may sleep for seconds; a publish that gets through
    means Redis is back, and the reader reconnects and fills the gap at once."""
    server = RedisServer(persistent=True)
    try:
        pubsub = make(server.url, history=100, reconnect_delay=8.0, max_reconnect_delay=20.0)
        sub = Positioned()
        pubsub.subscribe("wake", sub)
        pubsub.publish("wake", "before")
        assert wait_for(lambda: len(sub.got) == 1, 5)
        server.kill()
        assert wait_for(lambda: not pubsub.connected, 5)
        server.start()
        gevent.sleep(0.2)
        pubsub.publish("wake", "after")
        assert wait_for(lambda: sub.messages() == ["before", "after"], 3)
    finally:
        server.close()


def test_history_read_errors_are_pubsub_errors(make):
    pubsub = make("redis://127.0.0.1:1/0", history=5, socket_connect_timeout=0.5)
    with pytest.raises(PubSubError):
        pubsub.history("nowhere")
    with pytest.raises(PubSubError):
        pubsub.publish("nowhere", "x")
    assert pubsub.history_size("nowhere") == 5
    assert Position.parse("e:1").offset == 1


def test_a_message_id_makes_a_retried_publish_harmless(redis_server, make):
    redis_server.cli("FLUSHALL")
    pubsub = make(redis_server.url, history=10)
    sub = Positioned()
    pubsub.subscribe("retry", sub)
    assert pubsub.publish("retry", "once", message_id="abc") == 1
    assert pubsub.publish("retry", "once", message_id="abc") == 0
    assert pubsub.publish("retry", "twice") == 1
    assert wait_for(lambda: len(sub.got) == 2, 5)
    gevent.sleep(0.1)
    assert sub.messages() == ["once", "twice"] and sub.offsets() == [1, 2]
    with pytest.raises(ValueError):
        make(redis_server.url).publish("no-history", "x", message_id="1")
