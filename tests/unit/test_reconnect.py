"""The pure parts of the reconnecting client and the recovery protocol."""

from __future__ import annotations

import itertools

import pytest

from wsmiddleware._reconnect import backoff, with_since
from wsmiddleware.pubsub import Position
from wsmiddleware.pubsub.history import Recovery
from wsmiddleware.recovery import message_frame, parse_frame, recovery_frame, since_from_query


def test_backoff_doubles_up_to_its_cap():
    high = [backoff(n, 0.1, 10.0, rand=lambda: 1.0) for n in range(12)]
    assert high[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert high == sorted(high) and max(high) == 10.0 and high[-1] == 10.0


def test_backoff_jitter_stays_between_half_and_all_of_the_delay():
    low = [backoff(n, 0.1, 10.0, rand=lambda: 0.0) for n in range(12)]
    assert low[:2] == pytest.approx([0.05, 0.1]) and low[-1] == 5.0
    fake = itertools.cycle([0.0, 0.25, 0.5, 0.999])
    for attempt in range(40):
        full = min(10.0, 0.1 * 2**attempt)
        assert full / 2 <= backoff(attempt, 0.1, 10.0, rand=lambda: next(fake)) <= full


def test_backoff_is_bounded_for_any_attempt_number():
    assert backoff(10_000, 0.1, 10.0) <= 10.0
    assert backoff(2**40, 0.1, 10.0, rand=lambda: 1.0) == 10.0
    # A day of retries at the cap is a bounded number of attempts, not a storm.
    clock, attempts = 0.0, 0
    while clock < 86_400:
        clock += backoff(attempts, 0.1, 10.0, rand=lambda: 0.0)
        attempts += 1
    assert attempts <= 86_400 / 5 + 20


def test_with_since_sets_replaces_and_removes_the_position():
    assert with_since("ws://h/p?a=1", Position("e", 3)) == "ws://h/p?a=1&wsm_since=e%3A3"
    assert with_since("ws://h/p?wsm_since=e%3A1&a=1", Position("e", 9)) == "ws://h/p?a=1&wsm_since=e%3A9"
    assert with_since("ws://h/p?wsm_since=e%3A1", None) == "ws://h/p"


def test_frames_round_trip():
    assert parse_frame(message_frame("c", "hé", Position("e", 4))) == {
        "type": "message", "channel": "c", "epoch": "e", "offset": 4, "data": "hé", "position": Position("e", 4)}
    binary = parse_frame(message_frame("c", b"\x00\xff", None))
    assert binary["data"] == b"\x00\xff" and binary["position"] is None and "data_b64" not in binary
    answer = parse_frame(recovery_frame("c", Recovery(True, Position("e", 7), 2)))
    assert answer["recovered"] is True and answer["position"] == Position("e", 7)
    assert parse_frame(recovery_frame("c", Recovery(None, Position("", 0), 0)))["position"] is None
    assert parse_frame('{"type": "join", "member": "x"}') == {"type": "join", "member": "x"}
    for bad in ("[]", "{}", '{"type": 3}'):
        with pytest.raises(ValueError):
            parse_frame(bad)


@pytest.mark.parametrize("value", ["nonsense", "e:", ":5", "e:-1", "e:1.5"])
def test_malformed_positions(value):
    with pytest.raises(ValueError):
        since_from_query(value)
    assert since_from_query(None) is None and since_from_query("") is None
    assert since_from_query("e:5") == Position("e", 5)
