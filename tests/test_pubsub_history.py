"""Channel history on both backends: positions, ``history()``, ``resume()`` (replay, then
live, nothing lost or repeated at the seam), sizes per pattern, expiry."""

from __future__ import annotations

import random

import gevent
import pytest

from wsmiddleware.pubsub import MemoryPubSub, Position, RedisPubSub

from .test_pubsub_redis import wait_for


class Positioned:
    """A subscriber that records ``(message, position)``."""

    positioned = True

    def __init__(self) -> None:
        self.got: list[tuple[str | bytes, Position | None]] = []

    def __call__(self, channel, message, position=None):
        self.got.append((message, position))

    def messages(self) -> list:
        return [message for message, _ in self.got]

    def offsets(self) -> list[int]:
        return [position.offset for _, position in self.got]


@pytest.fixture(params=["memory", "redis"])
def make(request):
    made = []

    def factory(**options):
        if request.param == "memory":
            instance = MemoryPubSub(**options)
        else:
            server = request.getfixturevalue("redis_server")
            server.cli("FLUSHALL")
            instance = RedisPubSub(server.url, reconnect_delay=0.05, max_reconnect_delay=0.5, **options)
        made.append(instance)
        return instance

    factory.kind = request.param
    yield factory
    for instance in made:
        instance.close()


def test_every_message_gets_the_next_offset_in_one_epoch(make):
    pubsub = make(history=10)
    sub = Positioned()
    pubsub.subscribe("h:one", sub)
    for i in range(1, 6):
        pubsub.publish("h:one", f"m{i}")
    assert wait_for(lambda: len(sub.got) == 5, 5)
    assert sub.messages() == [f"m{i}" for i in range(1, 6)]
    assert sub.offsets() == [1, 2, 3, 4, 5]
    assert len({position.epoch for _, position in sub.got}) == 1
    found = pubsub.history("h:one")
    assert found.head == 5 and found.epoch == sub.got[0][1].epoch
    assert found.messages == [(i, f"m{i}") for i in range(1, 6)]


def test_history_keeps_exactly_the_last_n_and_says_when_a_gap_is_gone(make):
    pubsub = make(history=4)
    for i in range(1, 11):
        pubsub.publish("h:last", f"m{i}")
    found = pubsub.history("h:last")
    assert [offset for offset, _ in found.messages] == [7, 8, 9, 10]
    assert pubsub.history("h:last", limit=2).messages == [(9, "m9"), (10, "m10")]
    epoch = found.epoch
    after6 = pubsub.history("h:last", after=Position(epoch, 6))
    assert after6.complete and after6.messages == [(7, "m7"), (8, "m8"), (9, "m9"), (10, "m10")]
    assert pubsub.history("h:last", after=Position(epoch, 8), limit=1).messages == [(9, "m9")]
    at_head = pubsub.history("h:last", after=Position(epoch, 10))
    assert at_head.complete and at_head.messages == []
    for gone in (Position(epoch, 5), Position("another-epoch", 8), Position(epoch, 11)):
        answer = pubsub.history("h:last", after=gone)
        assert not answer.complete and answer.messages == [], gone


def test_text_and_bytes_keep_their_type_in_history(make):
    pubsub = make(history=5)
    for message in ["text é", b"\x00\xff bytes", "", b""]:
        pubsub.publish("h:types", message)
    kept = [message for _, message in pubsub.history("h:types").messages]
    assert kept == ["text é", b"\x00\xff bytes", "", b""]
    assert [type(m) for m in kept] == [str, bytes, str, bytes]


def test_history_sizes_per_channel_pattern(make):
    pubsub = make(history={"chat:*": 3, "news": 1})
    assert (pubsub.history_size("chat:x"), pubsub.history_size("news"), pubsub.history_size("other")) == (3, 1, 0)
    for i in range(5):
        for channel in ("chat:x", "news", "other"):
            pubsub.publish(channel, str(i))
    assert [m for _, m in pubsub.history("chat:x").messages] == ["2", "3", "4"]
    assert [m for _, m in pubsub.history("news").messages] == ["4"]
    assert pubsub.history("other").messages == [] and not pubsub.history("other", after=Position("", 0)).complete
    sub = Positioned()
    pubsub.subscribe("other", sub)
    pubsub.publish("other", "live")
    assert wait_for(lambda: sub.got == [("live", None)], 5)


def test_resume_replays_what_was_missed_then_live_each_once_in_order(make):
    pubsub = make(history=100)
    first = Positioned()
    pubsub.subscribe("h:resume", first)
    for i in range(1, 11):
        pubsub.publish("h:resume", i.to_bytes(2, "big"))
    assert wait_for(lambda: len(first.got) == 10, 5)
    pubsub.unsubscribe("h:resume", first)
    where = first.got[3][1]  # it saw 1..4 before "reconnecting"
    again = Positioned()
    recovery = pubsub.resume("h:resume", again, since=where)
    assert recovery.recovered is True and recovery.replayed == 6
    assert recovery.position == Position(where.epoch, 10)
    for i in range(11, 16):
        pubsub.publish("h:resume", i.to_bytes(2, "big"))
    assert wait_for(lambda: len(again.got) == 11, 5)
    assert [int.from_bytes(m, "big") for m in again.messages()] == list(range(5, 16))
    assert again.offsets() == list(range(5, 16))


def test_resume_seam_under_concurrent_publishing_loses_and_repeats_nothing(make):
    """Publishers run while subscribers resume at random points: each subscriber gets
    exactly the messages after its position, in order."""
    pubsub = make(history=1000)
    total = 300
    published: list[int] = []

    def publisher():
        for i in range(1, total + 1):
            pubsub.publish("h:seam", str(i))
            published.append(i)
            if i % 7 == 0:
                gevent.sleep(0.001)

    task = gevent.spawn(publisher)
    subscribers = []
    rng = random.Random(12)
    with gevent.Timeout(30):
        while not task.dead and len(subscribers) < 12:
            gevent.sleep(rng.random() * 0.02)
            head = pubsub.history("h:seam", limit=0)
            since = Position(head.epoch, max(0, head.head - rng.randrange(0, 20)))
            sub = Positioned()
            recovery = pubsub.resume("h:seam", sub, since=since)
            assert recovery.recovered is True
            subscribers.append((since.offset, sub))
        task.join()
    assert subscribers, "the publisher ended before any subscriber resumed"
    for start, sub in subscribers:
        assert wait_for(lambda sub=sub, start=start: len(sub.got) >= total - start, 10)
        gevent.sleep(0.05)
        assert sub.messages() == [str(i) for i in range(start + 1, total + 1)], start
        assert sub.offsets() == list(range(start + 1, total + 1))


def test_resume_without_a_position_is_live_only_and_gives_the_head(make):
    pubsub = make(history=5)
    pubsub.publish("h:fresh", "old")
    sub = Positioned()
    recovery = pubsub.resume("h:fresh", sub)
    assert recovery.recovered is None and recovery.replayed == 0 and recovery.position.offset == 1
    pubsub.publish("h:fresh", "new")
    assert wait_for(lambda: sub.messages() == ["new"], 5)


def test_resume_after_a_gap_older_than_the_history_is_not_recovered_then_live(make):
    pubsub = make(history=3)
    for i in range(10):
        pubsub.publish("h:gone", str(i))
    epoch = pubsub.history("h:gone").epoch
    sub = Positioned()
    recovery = pubsub.resume("h:gone", sub, since=Position(epoch, 2))
    assert recovery.recovered is False and recovery.replayed == 0
    assert recovery.position == Position(epoch, 10)
    other = Positioned()
    assert pubsub.resume("h:gone", other, since=Position("not-the-epoch", 9)).recovered is False
    pubsub.publish("h:gone", "live")
    assert wait_for(lambda: sub.messages() == ["live"] and other.messages() == ["live"], 5)


def test_resume_on_a_channel_without_history_says_so_and_subscribes(make):
    pubsub = make()
    sub = Positioned()
    assert pubsub.resume("h:none", sub, since=Position("e", 3)).recovered is False
    assert pubsub.resume("h:none2", sub).recovered is None
    pubsub.publish("h:none", "x")
    assert wait_for(lambda: sub.got == [("x", None)], 5)


def test_history_expires_after_its_ttl(make):
    pubsub = make(history=10, history_ttl=1)
    pubsub.publish("h:ttl", "soon gone")
    epoch = pubsub.history("h:ttl").epoch
    assert [m for _, m in pubsub.history("h:ttl").messages] == ["soon gone"]
    gevent.sleep(1.6 if make.kind == "memory" else 2.2)
    assert pubsub.history("h:ttl").messages == []
    assert not pubsub.history("h:ttl", after=Position(epoch, 0)).complete


def test_a_new_memory_pubsub_is_a_new_epoch():
    assert MemoryPubSub(history=1).epoch != MemoryPubSub(history=1).epoch


def test_plain_subscribers_get_plain_calls_on_history_channels(make):
    pubsub = make(history=5)
    got = []
    pubsub.subscribe("h:plain", lambda channel, message: got.append((channel, message)))
    pubsub.publish("h:plain", "hi")
    assert wait_for(lambda: got == [("h:plain", "hi")], 5)


def test_history_arguments_are_checked():
    with pytest.raises(ValueError):
        MemoryPubSub(history=-1)
    with pytest.raises(TypeError):
        MemoryPubSub(history="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RedisPubSub("redis://127.0.0.1:1/0", history=5, history_ttl=0)
    with pytest.raises(ValueError):
        RedisPubSub("redis://127.0.0.1:1/0", key_prefix="a{b}")
    with pytest.raises(ValueError):
        Position.parse("no-offset")
    assert Position.parse(str(Position("ab12", 7))) == Position("ab12", 7)
