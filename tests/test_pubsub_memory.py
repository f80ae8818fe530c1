"""MemoryPubSub in this process: fan-out, ordering, patterns, types, bookkeeping."""

from __future__ import annotations

import gevent
import pytest

from wsmiddleware import PubSubError
from wsmiddleware.pubsub import MemoryPubSub

from .support import Inbox


def test_fan_out_to_500_subscribers_once_each_in_order_per_publisher():
    pubsub = MemoryPubSub()
    inboxes = [Inbox() for _ in range(500)]
    for inbox in inboxes:
        pubsub.subscribe("room:big", inbox)
    publishers, per_publisher = 4, 50

    def publish(name):
        for i in range(per_publisher):
            assert pubsub.publish("room:big", f"{name}:{i}") == 500
            gevent.sleep(0)  # interleave the publishers

    gevent.joinall([gevent.spawn(publish, f"p{n}") for n in range(publishers)], timeout=30, raise_error=True)
    for inbox in inboxes:
        got = inbox.messages()
        assert len(got) == publishers * per_publisher
        assert len(set(got)) == len(got)
        for n in range(publishers):
            mine = [m for m in got if m.startswith(f"p{n}:")]
            assert mine == [f"p{n}:{i}" for i in range(per_publisher)]


def test_text_stays_text_and_bytes_stay_bytes():
    pubsub = MemoryPubSub()
    inbox = Inbox()
    pubsub.subscribe("types", inbox)
    for message in ["", "plain", "é✓ 🚀", "\x01starts with a control byte", b"", b"\x00\xff\xfe", b"text-like bytes"]:
        pubsub.publish("types", message)
    pubsub.publish("types", bytearray(b"from bytearray"))
    pubsub.publish("types", memoryview(b"from memoryview"))
    got = inbox.messages()
    assert got[:7] == ["", "plain", "é✓ 🚀", "\x01starts with a control byte", b"", b"\x00\xff\xfe", b"text-like bytes"]
    assert [type(m) for m in got[:7]] == [str, str, str, str, bytes, bytes, bytes]
    assert got[7:] == [b"from bytearray", b"from memoryview"]
    assert all(type(m) is bytes for m in got[7:])


@pytest.mark.parametrize("bad", [1, 2.5, None, {"a": 1}, ["x"]])
def test_other_message_types_are_refused(bad):
    pubsub = MemoryPubSub()
    with pytest.raises(TypeError, match="str .text. or bytes .binary."):
        pubsub.publish("x", bad)


@pytest.mark.parametrize("bad", ["", None, b"room"])
def test_channel_must_be_a_non_empty_str(bad):
    pubsub = MemoryPubSub()
    with pytest.raises(TypeError, match="channel"):
        pubsub.subscribe(bad, Inbox())
    with pytest.raises(TypeError, match="channel"):
        pubsub.publish(bad, "x")


def test_patterns_and_exact_names():
    pubsub = MemoryPubSub()
    rooms, lobby, digits, not_a, literal = Inbox(), Inbox(), Inbox(), Inbox(), Inbox()
    pubsub.subscribe("room:*", rooms)
    pubsub.subscribe("lobby", lobby)
    pubsub.subscribe("room:[0-9]", digits)
    pubsub.subscribe("room:[!a]?", not_a)
    pubsub.subscribe("room:*", literal, pattern=False)  # the channel named "room:*", nothing else
    for channel in ["room:1", "room:a1", "room:b1", "lobby", "Room:1", "room:*"]:
        pubsub.publish(channel, channel)
    assert rooms.messages() == ["room:1", "room:a1", "room:b1", "room:*"]
    assert lobby.messages() == ["lobby"]
    assert digits.messages() == ["room:1"]
    assert not_a.messages() == ["room:b1"]
    assert literal.messages() == ["room:*"]
    assert [channel for channel, _ in rooms.got] == ["room:1", "room:a1", "room:b1", "room:*"]


def test_exact_and_pattern_subscriptions_each_deliver():
    pubsub = MemoryPubSub()
    inbox = Inbox()
    pubsub.subscribe("news", inbox)
    pubsub.subscribe("n*s", inbox)
    assert pubsub.publish("news", "flash") == 2
    assert inbox.messages() == ["flash", "flash"]


def test_subscribe_twice_is_one_subscription_and_unsubscribe_is_idempotent():
    pubsub = MemoryPubSub()
    inbox = Inbox()
    pubsub.subscribe("a", inbox)
    pubsub.subscribe("a", inbox)
    assert pubsub.subscription_count() == 1
    assert pubsub.publish("a", "once") == 1
    pubsub.unsubscribe("a", inbox)
    pubsub.unsubscribe("a", inbox)
    pubsub.unsubscribe("never-subscribed", inbox)
    assert pubsub.subscription_count() == 0
    assert not pubsub.is_subscribed(inbox)
    assert pubsub.publish("a", "nobody") == 0
    assert inbox.messages() == ["once"]


def test_sender_is_spared_its_own_message():
    pubsub = MemoryPubSub()
    alice, bob = Inbox(), Inbox()
    pubsub.subscribe("chat", alice)
    pubsub.subscribe("chat", bob)
    assert pubsub.publish("chat", "from alice", sender=alice) == 1
    assert alice.messages() == []
    assert bob.messages() == ["from alice"]


def test_raising_subscriber_does_not_stop_the_others(caplog):
    pubsub = MemoryPubSub()
    before, after = Inbox(), Inbox()

    def broken(channel, message):
        raise RuntimeError("subscriber bug")

    pubsub.subscribe("c", before)
    pubsub.subscribe("c", broken)
    pubsub.subscribe("c", after)
    assert pubsub.publish("c", "still delivered") == 2
    assert before.messages() == after.messages() == ["still delivered"]
    assert any("subscriber bug" in (record.exc_text or "") or record.exc_info for record in caplog.records)


def test_subscriber_may_unsubscribe_itself_while_being_delivered():
    pubsub = MemoryPubSub()
    seen = []

    def once(channel, message):
        seen.append(message)
        pubsub.unsubscribe(channel, once)

    other = Inbox()
    pubsub.subscribe("c", once)
    pubsub.subscribe("c", other)
    pubsub.publish("c", "1")
    pubsub.publish("c", "2")
    assert seen == ["1"]
    assert other.messages() == ["1", "2"]
    assert pubsub.subscription_count() == 1


def test_bound_methods_unsubscribe_by_equality():
    pubsub = MemoryPubSub()
    inbox = Inbox()
    pubsub.subscribe("c", inbox.__call__)
    pubsub.unsubscribe("c", inbox.__call__)  # a new bound-method object, equal to the first
    assert pubsub.subscription_count() == 0


def test_closed_pubsub_refuses_work():
    pubsub = MemoryPubSub()
    inbox = Inbox()
    pubsub.subscribe("c", inbox)
    pubsub.close()
    assert pubsub.subscription_count() == 0
    with pytest.raises(PubSubError, match="closed"):
        pubsub.publish("c", "x")
    with pytest.raises(PubSubError, match="closed"):
        pubsub.subscribe("c", inbox)
    pubsub.unsubscribe("c", inbox)  # harmless after close
