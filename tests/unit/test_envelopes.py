"""PubSubWS's envelope subscriber: one encoding per message for all its recipients,
recovery frame first, held messages after it (in process, MemoryPubSub)."""

from __future__ import annotations

import json

import wsmiddleware.handler as handler
from wsmiddleware.pubsub import MemoryPubSub
from wsmiddleware.pubsub.history import Recovery


class Sink:
    """Stands for a WebSocket: what the subscriber writes."""

    closed = False

    def __init__(self) -> None:
        self.written: list = []

    def write(self, frame) -> None:
        self.written.append(frame)


def test_a_message_is_encoded_once_for_all_envelope_subscribers(monkeypatch):
    calls = []
    real = handler.message_frame
    monkeypatch.setattr(handler, "message_frame", lambda *a: calls.append(a) or real(*a))
    pubsub = MemoryPubSub(history=10)
    sinks = [Sink() for _ in range(50)]
    for sink in sinks:
        subscriber = handler._Envelopes(None, sink)
        subscriber.start("c", pubsub.resume("c", subscriber))
    pubsub.publish("c", "one")
    pubsub.publish("c", "one")  # the same str object again: a new position, a new frame
    assert len(calls) == 2
    frames = [[json.loads(f) for f in sink.written] for sink in sinks]
    assert all(f == frames[0] for f in frames)
    assert [f["offset"] for f in frames[0][1:]] == [1, 2] and frames[0][0]["type"] == "recovery"
    # The cached bytes are shared, not copies.
    assert all(sink.written[1] is sinks[0].written[1] for sink in sinks)


def test_messages_arriving_before_the_recovery_frame_follow_it_in_order():
    sink = Sink()
    subscriber = handler._Envelopes(None, sink)
    subscriber("c", "early", None)  # e.g. live while resume() was still replaying
    subscriber("c", b"\x01", None)
    assert sink.written == []
    from wsmiddleware.pubsub import Position

    subscriber.start("c", Recovery(True, Position("e", 3), 1))
    subscriber("c", "late", None)
    got = [json.loads(f) for f in sink.written]
    assert [g["type"] for g in got] == ["recovery", "message", "message", "message"]
    assert got[1]["data"] == "early" and got[2]["data_b64"] == "AQ==" and got[3]["data"] == "late"
