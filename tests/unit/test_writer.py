"""Unit tests of the connection writer against a fake transport, on real gevent (no servers).

Nothing is monkey-patched: the writer greenlet, the per-turn callback and the
fake socket's waits are plain gevent. Every wait is bounded by a Timeout.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import gevent
import gevent.event
import pytest

from wsmiddleware._writer import KERNEL_CHECK_BYTES, Writer, _turns_of

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0


class FakeTransport:
    """The part of :class:`wsmiddleware.transport.Transport` the writer uses, with a
    kernel the test controls.

    ``room`` is how many bytes the kernel takes before the peer reads (``None``:
    any number); ``read(n)`` makes room. ``stream`` is everything written, in
    order. ``sendall`` waits cooperatively for room, like the real one.
    """

    def __init__(self, room: int | None = None) -> None:
        self.hub = gevent.get_hub()
        self.closed = False
        self.room = room
        self.stream = bytearray()
        self.try_sends: list[tuple] = []  # the parts of each try_send call, as given
        self.sendalls: list[bytes] = []  # what each sendall call was given
        self.sendall_types: list[type] = []
        self.eofs: list[int] = []  # len(stream) at each send_eof
        self.kernel_unsent = 0
        self.unsent_calls = 0
        self.try_send_error: OSError | None = None
        self.sendall_error: OSError | None = None
        self._room = gevent.event.Event()

    def _take(self, data) -> int:
        view = memoryview(data).cast("B")
        n = len(view) if self.room is None else min(self.room, len(view))
        if self.room is not None:
            self.room -= n
        self.stream += view[:n]
        return n

    def try_send(self, *parts) -> int:
        self.try_sends.append(parts)
        if self.try_send_error is not None:
            raise self.try_send_error
        if self.closed:
            raise BrokenPipeError("transport closed")
        sent = 0
        for part in parts:
            n = self._take(part)
            sent += n
            if n < len(part):
                break
        return sent

    def sendall(self, data) -> None:
        self.sendalls.append(bytes(data))
        self.sendall_types.append(type(data))
        view = memoryview(data)
        while True:
            if self.sendall_error is not None:
                raise self.sendall_error
            if self.closed:
                raise BrokenPipeError("transport closed")
            view = view[self._take(view):]
            if not view:
                return
            self._room.clear()
            self._room.wait()

    def send_eof(self) -> None:
        self.eofs.append(len(self.stream))

    def unsent(self) -> int:
        self.unsent_calls += 1
        return self.kernel_unsent

    # -- the test's side ---------------------------------------------------------------

    def read(self, n: int | None = None) -> None:
        """The peer reads: room for ``n`` more bytes (``None``: for anything from now on)."""
        self.room = None if n is None else (self.room or 0) + n
        self._room.set()

    def fail(self, error: OSError) -> None:
        """The socket fails: sends raise ``error``, a blocked sendall included."""
        self.try_send_error = self.sendall_error = error
        self._room.set()


class Errors:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


class Owner:
    """The connection a Writer works for: it calls ``owner._abort()`` when the socket fails."""

    def __init__(self, on_error: Callable[[], object]) -> None:
        self._abort = on_error


@pytest.fixture(autouse=True)
def bounded():
    """No test may hang: each one runs inside a gevent Timeout."""
    with gevent.Timeout(TIMEOUT * 2):
        yield


def make(room: int | None = None, on_error: Callable[[], object] | None = None) -> tuple[Writer, FakeTransport]:
    transport = FakeTransport(room)
    return Writer(transport, Owner(on_error if on_error is not None else Errors())), transport


def new_turn() -> None:
    """Let the hub run one pass of callbacks (the turn counter's, spawned greenlets...)."""
    gevent.sleep(0)


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    with gevent.Timeout(timeout, AssertionError("timed out waiting")):
        while not predicate():
            gevent.sleep(0.001)


def drained(writer: Writer) -> None:
    with gevent.Timeout(TIMEOUT, AssertionError("the writer did not drain")):
        assert writer.join(TIMEOUT)


# --- direct sends and batching ---------------------------------------------------------------


def test_send_goes_out_directly_when_the_kernel_takes_it_all():
    writer, t = make()
    new_turn()
    writer.send(b"frame-1")
    assert t.stream == b"frame-1"  # before any yield
    assert t.try_sends == [(b"frame-1",)] and t.sendalls == []
    assert writer.greenlet is None and writer.queue == [] and writer.queued == 0
    assert writer.join(0) is True


def test_second_send_in_the_same_turn_is_queued_then_batched():
    writer, t = make()
    new_turn()
    writer.send(b"one")
    writer.send(b"two")
    writer.send(b"three")
    assert t.stream == b"one"
    assert t.try_sends == [(b"one",)]
    assert writer.queue == [b"two", b"three"]
    assert writer.queued == len(b"twothree")
    assert writer.greenlet is not None
    new_turn()  # the sender yields once: the writer greenlet sends the burst
    assert t.stream == b"onetwothree"
    assert t.sendalls == [b"twothree"]  # one call for the burst
    assert writer.greenlet is None and writer.queue == [] and writer.queued == 0


def test_a_big_burst_is_one_sendall():
    writer, t = make()
    new_turn()
    frames = [b"%03d" % i for i in range(200)]
    for frame in frames:
        writer.send(frame)
    assert len(t.try_sends) == 1
    assert writer.queued == 3 * 199
    drained(writer)
    assert t.sendalls == [b"".join(frames[1:])]
    assert t.stream == b"".join(frames)


def test_sends_in_different_turns_are_direct():
    writer, t = make()
    for i in range(5):
        new_turn()
        writer.send(b"f%d" % i)
        assert writer.greenlet is None
    assert t.try_sends == [(b"f%d" % i,) for i in range(5)]
    assert t.sendalls == [] and t.stream == b"f0f1f2f3f4"


def test_after_a_burst_the_next_turn_is_direct_again():
    writer, t = make()
    new_turn()
    writer.send(b"a")
    writer.send(b"b")
    drained(writer)
    new_turn()
    writer.send(b"c")
    assert t.try_sends == [(b"a",), (b"c",)] and t.sendalls == [b"b"]
    assert t.stream == b"abc" and writer.greenlet is None


def test_sends_of_several_greenlets_in_one_turn_are_batched():
    """A broadcast: greenlets that run in the same turn share one batch."""
    writer, t = make()
    new_turn()
    greenlets = [gevent.spawn(writer.send, b"<%d>" % i) for i in range(4)]
    gevent.joinall(greenlets, timeout=TIMEOUT, raise_error=True)
    drained(writer)
    assert t.try_sends == [(b"<0>",)]
    assert t.sendalls == [b"<1><2><3>"]
    assert t.stream == b"<0><1><2><3>"


def test_writers_on_one_hub_share_the_turn():
    """The turn is the hub's: a second connection's first send in the turn is still direct."""
    w1, t1 = make()
    w2, t2 = make()
    new_turn()
    w1.send(b"a")
    w2.send(b"b")
    w1.send(b"c")
    assert t1.stream == b"a" and t2.stream == b"b"
    assert w1.queue == [b"c"] and w2.greenlet is None
    drained(w1)
    assert t1.stream == b"ac"


def test_send_on_a_closed_transport_does_nothing():
    errors = Errors()
    writer, t = make(on_error=errors)
    t.closed = True
    writer.send(b"x")
    writer.send(b"hdr", b"payload")
    assert t.try_sends == [] and t.stream == b""
    assert writer.queue == [] and writer.queued == 0 and writer.greenlet is None
    assert errors.calls == 0


# --- partial sends ---------------------------------------------------------------------------


def test_partial_send_queues_exactly_the_rest_as_a_memoryview():
    writer, t = make(room=3)
    new_turn()
    writer.send(b"abcdefgh")
    assert t.stream == b"abc"
    assert len(writer.queue) == 1
    rest = writer.queue[0]
    assert type(rest) is memoryview and rest == b"defgh"
    assert writer.queued == 5
    assert writer.greenlet is not None
    t.read()
    drained(writer)
    assert t.stream == b"abcdefgh"
    assert t.sendalls == [b"defgh"] and t.sendall_types == [memoryview]  # sent whole, not copied
    assert writer.queued == 0


def test_rest_of_a_partial_send_goes_out_in_order_with_later_frames():
    writer, t = make(room=2)
    new_turn()
    writer.send(b"first")
    new_turn()  # a new turn, but the writer greenlet is busy: still queued, in order
    writer.send(b"second")
    writer.send(b"third")
    assert t.stream == b"fi"
    # The writer greenlet took the rest and waits for room; later frames wait behind it.
    wait_for(lambda: t.sendalls == [b"rst"])
    assert writer.queue == [b"second", b"third"]
    assert writer.queued == len(b"rstsecondthird")  # the batch in flight counts
    t.read(1)
    new_turn()
    assert t.stream == b"fir" and writer.queued == len(b"rstsecondthird")
    t.read()
    drained(writer)
    assert t.stream == b"firstsecondthird"
    assert t.sendalls == [b"rst", b"secondthird"]
    assert writer.queued == 0


def test_nothing_taken_queues_the_whole_frame():
    writer, t = make(room=0)
    new_turn()
    writer.send(b"frame")
    assert t.stream == b""
    assert [bytes(chunk) for chunk in writer.queue] == [b"frame"] and writer.queued == 5
    t.read()
    drained(writer)
    assert t.stream == b"frame"


def test_partial_sends_while_the_peer_reads_slowly():
    writer, t = make(room=4)
    frames = [bytes([65 + i]) * (i + 3) for i in range(8)]
    for frame in frames:
        new_turn()
        writer.send(frame)
    while writer.greenlet is not None:
        t.read(3)
        gevent.sleep(0.001)
    assert t.stream == b"".join(frames)
    assert writer.queued == 0


# --- vectored sends (header, payload) --------------------------------------------------------


def test_vectored_send_passes_both_parts_unjoined():
    writer, t = make()
    new_turn()
    header, payload = b"HDR", b"payload" * 10
    writer.send(header, payload)
    assert len(t.try_sends) == 1
    parts = t.try_sends[0]
    assert len(parts) == 2 and parts[0] is header and parts[1] is payload
    assert t.stream == header + payload
    assert writer.greenlet is None and writer.queued == 0


@pytest.mark.parametrize("payload_type", [bytes, bytearray])
@pytest.mark.parametrize("room", [0, 1, 2, 3, 4, 9])  # in the header, at its end, in the payload
def test_vectored_send_partly_sent(payload_type, room):
    header, original = b"HDR", b"payload-bytes"
    payload = payload_type(original)
    writer, t = make(room=room)
    new_turn()
    writer.send(header, payload)
    whole = header + original
    assert t.stream == whole[:room]
    assert len(writer.queue) == 1
    rest = writer.queue[0]
    assert type(rest) is memoryview and rest == whole[room:]
    assert writer.queued == len(whole) - room
    if payload_type is bytearray:
        payload[:] = b"X" * len(payload)  # the caller reuses its buffer at once
    t.read()
    drained(writer)
    assert t.stream == whole
    assert writer.queued == 0


@pytest.mark.parametrize("room", [0, 2, 3, 5])
def test_vectored_send_with_a_memoryview_of_a_mutable_buffer(room):
    buffer = bytearray(b"0123456789")
    writer, t = make(room=room)
    new_turn()
    writer.send(b"H" * 3, memoryview(buffer))
    buffer[:] = b"-" * 10
    t.read()
    drained(writer)
    assert t.stream == b"HHH0123456789"


def test_bytearray_payload_partly_sent_is_not_referenced():
    payload = bytearray(b"payload")
    writer, t = make(room=5)  # the header and two bytes of the payload
    new_turn()
    writer.send(b"HDR", payload)
    rest = writer.queue[0]
    assert rest.obj is not payload
    payload[:] = b"XXXXXXX"
    assert rest == b"yload"


def test_bytes_payload_partly_sent_is_referenced_not_copied():
    payload = b"payload" * 1000
    writer, t = make(room=5)
    new_turn()
    writer.send(b"HDR", payload)
    rest = writer.queue[0]
    assert rest.obj is payload  # no copy of a big immutable payload
    assert rest == payload[2:]


@pytest.mark.parametrize("payload_type", [bytes, bytearray])
def test_vectored_send_queued_in_a_turn_is_copied(payload_type):
    writer, t = make()
    new_turn()
    writer.send(b"first")
    payload = payload_type(b"payload")
    writer.send(b"HDR", payload)
    assert writer.queue == [b"HDRpayload"] and writer.queued == 10
    if payload_type is bytearray:
        payload[:] = b"XXXXXXX"
    drained(writer)
    assert t.stream == b"firstHDRpayload"


def test_empty_payload():
    writer, t = make(room=1)
    new_turn()
    writer.send(b"HDR", b"")
    assert writer.queue[0] == b"DR" and writer.queued == 2
    t.read()
    drained(writer)
    assert t.stream == b"HDR"


# --- owed ---------------------------------------------------------------------------------------


def test_owed_is_zero_without_a_look_before_the_check_threshold():
    writer, t = make()
    t.kernel_unsent = 1000
    assert writer.owed() == 0
    new_turn()
    writer.send(b"x" * (KERNEL_CHECK_BYTES - 1))
    assert writer.owed() == 0
    assert t.unsent_calls == 0  # cheap: the kernel was not asked


def test_owed_includes_the_kernel_after_the_check_threshold():
    writer, t = make()
    t.kernel_unsent = 1000
    new_turn()
    writer.send(b"x" * (KERNEL_CHECK_BYTES - 1))
    new_turn()
    writer.send(b"y")
    assert writer.owed() == 1000
    assert t.unsent_calls == 1
    # The count of bytes sent starts over after a look.
    assert writer.owed() == 0 and t.unsent_calls == 1
    new_turn()
    writer.send(b"z" * KERNEL_CHECK_BYTES)
    t.kernel_unsent = 7
    assert writer.owed() == 7 and t.unsent_calls == 2


def test_bytes_sent_by_the_writer_greenlet_count_towards_the_check():
    writer, t = make()
    t.kernel_unsent = 99
    new_turn()
    writer.send(b"a")
    writer.send(b"b" * KERNEL_CHECK_BYTES)  # queued: sent by the writer greenlet
    drained(writer)
    assert writer.owed() == 99


def test_owed_with_bytes_queued_does_not_ask_the_kernel_per_frame():
    # A burst queued within one turn must not cost a system call per frame: the
    # kernel is asked once per KERNEL_CHECK_BYTES sent (or while it holds much).
    writer, t = make(room=10)
    t.kernel_unsent = 10
    new_turn()
    writer.send(b"x" * 25)
    assert writer.queued == 15
    assert writer.owed() == 15
    assert writer.owed() == 15
    assert t.unsent_calls == 0
    t.read()
    drained(writer)
    t.kernel_unsent = 0
    assert writer.owed() == 0


# --- discard_queued ---------------------------------------------------------------------------


def test_discard_keeps_the_partly_sent_head():
    writer, t = make(room=2)
    new_turn()
    writer.send(b"abcdef")
    writer.send(b"gh")
    writer.send(b"ij", b"kl")
    assert writer.queued == 4 + 2 + 4
    writer.discard_queued()
    assert len(writer.queue) == 1 and type(writer.queue[0]) is memoryview and writer.queue[0] == b"cdef"
    assert writer.queued == 4
    writer.send(b"after")  # e.g. the close frame
    assert writer.queued == 9
    t.read()
    drained(writer)
    assert t.stream == b"abcdefafter"
    assert writer.queued == 0


def test_discard_without_a_partly_sent_head_drops_everything_queued():
    writer, t = make()
    new_turn()
    writer.send(b"direct")
    writer.send(b"q1")
    writer.send(b"q2")
    writer.discard_queued()
    assert writer.queue == [] and writer.queued == 0
    writer.send(b"close")
    drained(writer)
    assert t.stream == b"directclose"
    assert writer.queued == 0


def test_discard_leaves_the_batch_in_flight_counted():
    writer, t = make(room=1)
    new_turn()
    writer.send(b"abc")
    wait_for(lambda: t.sendalls == [b"bc"])  # in flight, waiting for room
    writer.send(b"x" * 10)
    writer.send(b"y" * 10)
    assert writer.queued == 2 + 20
    writer.discard_queued()
    assert writer.queue == [] and writer.queued == 2
    t.read()
    drained(writer)
    assert t.stream == b"abc" and writer.queued == 0


def test_discard_on_an_idle_writer():
    writer, _ = make()
    writer.discard_queued()
    assert writer.queue == [] and writer.queued == 0


# --- send_eof -------------------------------------------------------------------------------


def test_send_eof_at_once_when_nothing_is_queued():
    writer, t = make()
    new_turn()
    writer.send(b"abc")
    writer.send_eof()
    assert t.eofs == [3]


def test_send_eof_waits_for_the_drain():
    writer, t = make(room=2)
    new_turn()
    writer.send(b"abcdef")
    writer.send(b"close")
    writer.send_eof()
    assert t.eofs == [] and writer.eof_pending
    new_turn()
    assert t.eofs == []
    t.read()
    drained(writer)
    assert t.eofs == [len(b"abcdefclose")]
    assert not writer.eof_pending


def test_send_eof_after_a_batch_in_the_same_turn():
    writer, t = make()
    new_turn()
    writer.send(b"a")
    writer.send(b"b")
    writer.send_eof()
    assert t.eofs == []
    drained(writer)
    assert t.eofs == [2]


# --- failures -------------------------------------------------------------------------------


def test_oserror_in_try_send_calls_on_error_once():
    errors = Errors()
    writer, t = make(on_error=errors)
    t.try_send_error = ConnectionResetError()
    new_turn()
    writer.send(b"abc")
    assert errors.calls == 1
    assert writer.queue == [] and writer.queued == 0 and writer.greenlet is None


def test_oserror_in_a_vectored_try_send_calls_on_error_once():
    errors = Errors()
    writer, t = make(on_error=errors)
    t.try_send_error = BrokenPipeError()
    new_turn()
    writer.send(b"HDR", bytearray(b"payload"))
    assert errors.calls == 1
    assert writer.queue == [] and writer.queued == 0 and writer.greenlet is None


def test_oserror_in_the_drain_calls_on_error_once_and_empties_the_queue():
    errors = Errors()
    writer, t = make(on_error=errors)
    new_turn()
    writer.send(b"direct")
    t.sendall_error = ConnectionResetError()
    writer.send(b"q1")
    writer.send(b"q2")
    writer.send_eof()
    with gevent.Timeout(TIMEOUT):
        writer.join(TIMEOUT)
    assert errors.calls == 1
    assert writer.queue == [] and writer.queued == 0 and writer.greenlet is None
    assert t.eofs == []


def test_oserror_while_the_drain_waits_for_room():
    errors = Errors()
    writer, t = make(room=1, on_error=errors)
    new_turn()
    writer.send(b"abcdef")
    wait_for(lambda: t.sendalls == [b"bcdef"])
    writer.send(b"more")
    writer.send(b"and more")
    t.fail(BrokenPipeError())
    wait_for(lambda: writer.greenlet is None)
    assert errors.calls == 1
    assert writer.queue == [] and writer.queued == 0


def test_on_error_closing_the_transport_ends_sending():
    """The connection's on_error aborts the transport: later sends are no-ops."""
    t = FakeTransport()
    errors = Errors()

    def on_error() -> None:
        errors()
        t.closed = True

    writer = Writer(t, Owner(on_error))
    t.try_send_error = ConnectionResetError()
    new_turn()
    writer.send(b"a")
    writer.send(b"b")
    new_turn()
    writer.send(b"c")
    assert errors.calls == 1
    assert writer.queue == [] and writer.queued == 0 and writer.greenlet is None


@pytest.mark.parametrize("where", ["try_send", "drain"])
def test_on_error_raising_is_logged_not_raised(where, caplog):
    def on_error() -> None:
        raise RuntimeError("boom")

    writer, t = make(on_error=on_error)
    new_turn()
    if where == "try_send":
        t.try_send_error = ConnectionResetError()
        writer.send(b"a")
    else:
        writer.send(b"a")
        t.sendall_error = ConnectionResetError()
        writer.send(b"b")
        greenlet = writer.greenlet
        greenlet.join(TIMEOUT)
        assert greenlet.successful()
    assert writer.greenlet is None and writer.queued == 0
    records = [r for r in caplog.records if r.name == "wsmiddleware.writer"]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], RuntimeError)


def test_transport_closed_while_queued_stops_the_drain():
    writer, t = make()
    new_turn()
    writer.send(b"a")
    writer.send(b"b")
    t.closed = True
    with gevent.Timeout(TIMEOUT):
        assert writer.join(TIMEOUT)
    assert t.stream == b"a" and t.sendalls == []


# --- join and stop --------------------------------------------------------------------------


def test_join_without_a_writer_greenlet():
    writer, _ = make()
    assert writer.join(None) is True
    assert writer.join(0) is True


def test_join_times_out_then_returns_true_once_drained():
    writer, t = make(room=0)
    new_turn()
    writer.send(b"abc")
    with gevent.Timeout(TIMEOUT):
        assert writer.join(0.02) is False
    assert writer.greenlet is not None
    t.read()
    with gevent.Timeout(TIMEOUT):
        assert writer.join(TIMEOUT) is True
    assert t.stream == b"abc"


def test_join_from_the_writer_greenlet_itself_does_not_wait():
    results = []
    writer, t = make(room=0)
    original = t.sendall

    def sendall(data) -> None:
        results.append(writer.join(TIMEOUT))
        t.read()
        original(data)

    t.sendall = sendall  # type: ignore[method-assign]
    new_turn()
    writer.send(b"abc")
    drained(writer)
    assert results == [False]


def test_stop_kills_the_writer_greenlet():
    writer, t = make(room=1)
    new_turn()
    writer.send(b"abcdef")
    writer.send(b"queued")
    wait_for(lambda: t.sendalls != [])
    greenlet = writer.greenlet
    assert greenlet is not None
    writer.stop()
    assert writer.greenlet is None and writer.queue == [] and writer.queued == 0
    greenlet.join(TIMEOUT)
    assert greenlet.dead
    t.read()
    new_turn()
    assert t.stream == b"a"  # nothing more after the stop


def test_stop_when_the_writer_greenlet_was_already_woken():
    """The peer reads, and in the same turn (before the writer greenlet ran) the
    writer is stopped: the stopped greenlet must not go on sending and counting."""
    writer, t = make(room=1)
    new_turn()
    writer.send(b"abcdef")
    wait_for(lambda: t.sendalls == [b"bcdef"])
    greenlet = writer.greenlet
    t.read()  # wakes the writer greenlet: its switch is scheduled in the hub...
    writer.stop()  # ...before the kill
    new_turn()
    writer.send(b"new")  # a frame sent after the stop
    greenlet.join(TIMEOUT)
    assert greenlet.dead
    # The batch that was in flight inside sendall may finish (the transport is
    # closed right after a stop in the engine), but the stopped greenlet neither
    # counts nor sends anything else, and does not take over the new writer.
    assert writer.queued == 0
    assert t.stream in (b"anew", b"abcdefnew")


def test_stop_before_the_writer_greenlet_ran():
    writer, t = make()
    new_turn()
    writer.send(b"a")
    writer.send(b"b")
    greenlet = writer.greenlet
    writer.stop()
    greenlet.join(TIMEOUT)
    assert greenlet.dead
    new_turn()
    assert t.stream == b"a" and t.sendalls == []
    assert writer.queue == [] and writer.queued == 0


def test_stop_on_an_idle_writer():
    writer, _ = make()
    writer.stop()
    assert writer.greenlet is None and writer.queued == 0


def test_stop_drops_a_pending_eof():
    writer, t = make(room=0)
    new_turn()
    writer.send(b"abc")
    writer.send_eof()
    greenlet = writer.greenlet
    writer.stop()
    greenlet.join(TIMEOUT)
    t.read()
    new_turn()
    assert t.eofs == []


# --- the turn counter -------------------------------------------------------------------------


def test_turn_counter_on_the_default_loop():
    hub = gevent.get_hub()
    turns = _turns_of(hub)
    assert _turns_of(hub) is turns
    new_turn()
    first = turns.current()
    assert turns.current() == first and turns.current() == first
    new_turn()
    second = turns.current()
    assert second == first + 1  # one turn in which something was sent
    new_turn()
    new_turn()
    new_turn()
    assert turns.current() == second + 1  # turns without a send are not counted


def test_turn_counter_advances_for_another_greenlet():
    turns = _turns_of(gevent.get_hub())
    new_turn()
    before = turns.current()
    seen = gevent.spawn_later(0.001, turns.current)
    assert seen.get(timeout=TIMEOUT) == before + 1


def test_default_loop_is_in_use():
    """The tests above ran on gevent's default loop (unless GEVENT_LOOP says otherwise)."""
    module = type(gevent.get_hub().loop).__module__
    if "GEVENT_LOOP" not in os.environ:
        assert module.startswith("gevent.libev")


LIBUV_SCRIPT = textwrap.dedent("""
    import gevent
    from tests.unit.test_writer import FakeTransport, Owner, Writer

    print(type(gevent.get_hub().loop).__module__)
    with gevent.Timeout(5):
        t = FakeTransport()
        writer = Writer(t, Owner(lambda: None))
        gevent.sleep(0)
        writer.send(b"one")
        writer.send(b"two")
        writer.send(b"three")
        assert t.stream == b"one" and writer.queue == [b"two", b"three"], (t.stream, writer.queue)
        gevent.sleep(0)
        assert t.sendalls == [b"twothree"] and writer.greenlet is None, t.sendalls
        for frame in (b"four", b"five"):
            gevent.sleep(0)
            writer.send(frame)
            assert writer.greenlet is None
        assert t.try_sends[1:] == [(b"four",), (b"five",)], t.try_sends
        t.room = 2
        gevent.sleep(0)
        writer.send(b"partial")
        assert writer.queue[0] == b"rtial"
        gevent.sleep(0.01)
        t.read()
        assert writer.join(5)
        assert t.stream == b"onetwothreefourfivepartial", t.stream
    print("ok")
""")


def test_batching_on_the_libuv_loop():
    env = dict(os.environ, GEVENT_LOOP="libuv", PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", LIBUV_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gevent.libuv.loop", "ok"], result.stdout
