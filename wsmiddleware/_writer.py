"""The write side of a connection: direct sends, a bounded queue, one writer greenlet.

A frame goes straight to the socket when nothing is queued. A second send in
the same turn of the event loop (a burst of broadcasts, say) is queued instead,
and the writer greenlet sends the whole burst in one call once the sending
greenlet yields. What the socket does not take at once is queued too, and the
writer drains it while the peer reads. Nothing here ever blocks the sender.

Turns are counted by a callback the hub runs once per turn in which something
was sent (``loop.run_callback``), which works the same on every gevent loop.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import gevent

__all__ = ["Writer"]

logger = logging.getLogger("wsmiddleware.writer")

#: Bytes sent between two looks at what the kernel still holds (see Writer.owed).
KERNEL_CHECK_BYTES = 65536


class _Turns:
    """Counts the turns of one hub's loop in which anything was sent."""

    __slots__ = ("count", "_armed", "_loop")

    def __init__(self, loop: Any) -> None:
        self.count = 0
        self._armed = False
        self._loop = loop

    def current(self) -> int:
        if not self._armed:
            self._armed = True
            self._loop.run_callback(self._advance)
        return self.count

    def _advance(self) -> None:
        self.count += 1
        self._armed = False


_turns: weakref.WeakKeyDictionary[Any, _Turns] = weakref.WeakKeyDictionary()


def _turns_of(hub: Any) -> _Turns:
    turns = _turns.get(hub)
    if turns is None:
        turns = _turns[hub] = _Turns(hub.loop)
    return turns


class Writer:
    """Sends frames on ``transport`` for ``owner``, whose ``_abort()`` is called once if
    the socket fails (the owner is held, not a bound method of it: one object less
    for every connection).

    ``queued`` counts the bytes waiting in user space, the batch in flight
    included; :meth:`owed` adds what the kernel still holds for the peer.
    """

    __slots__ = ("transport", "queue", "queued", "greenlet", "eof_pending", "_owner", "_turns", "_turn",
                 "_unchecked", "_kernel_full")

    def __init__(self, transport: Any, owner: Any) -> None:
        self.transport = transport
        self.queue: list[bytes | memoryview] = []
        self.queued = 0
        self.greenlet: gevent.Greenlet | None = None
        self.eof_pending = False
        self._owner = owner
        self._turns = _turns_of(transport.hub)
        self._turn = -1
        self._unchecked = 0
        self._kernel_full = False

    def send(self, data: bytes | memoryview, payload: bytes | bytearray | memoryview | None = None) -> None:
        """Send a frame, or with ``payload`` a frame header and its payload.

        The two parts go out in one vectored write, without being joined, when
        the socket takes them at once.
        """
        transport = self.transport
        if transport.closed:
            return
        if self.greenlet is not None:
            self._enqueue(data, payload)
            return
        turn = self._turns.current()
        if turn == self._turn:
            self._enqueue(data, payload)
            self._start()
            return
        self._turn = turn
        try:
            sent = transport.try_send(data) if payload is None else transport.try_send(data, payload)
        except OSError:
            self._failed()
            return
        self._unchecked += sent
        if payload is None:
            if sent == len(data):
                return
            rest = memoryview(data)[sent:]
        else:
            if sent == len(data) + len(payload):
                return
            # Only an immutable payload may be referenced instead of copied.
            if sent >= len(data) and type(payload) is bytes:
                rest = memoryview(payload)[sent - len(data):]
            else:
                rest = memoryview(b"".join((data, payload)))[sent:]
        # The rest of a partly sent frame: a memoryview in the queue must go out whole.
        self.queue.append(rest)
        self.queued += len(rest)
        self._start()

    def send_eof(self) -> None:
        """End our direction of the stream once everything queued is out."""
        if self.greenlet is None and not self.queue:
            self.transport.send_eof()
        else:
            self.eof_pending = True

    def owed(self) -> int:
        """Bytes owed to the peer: queued here, plus (looked at every so often) in the kernel.

        The kernel is asked once per KERNEL_CHECK_BYTES sent, and at every call while
        it holds much: a burst queued within one turn costs no system call per frame.
        """
        if self._unchecked < KERNEL_CHECK_BYTES and not self._kernel_full:
            return self.queued
        self._unchecked = 0
        unsent = self.transport.unsent()
        # While the kernel holds much, keep looking at every send: the peer is slow.
        self._kernel_full = unsent >= KERNEL_CHECK_BYTES
        return self.queued + unsent

    def discard_queued(self) -> None:
        """Drop queued frames, but the partly sent one at the head (it must go out whole)."""
        queue = self.queue
        keep = 1 if queue and type(queue[0]) is memoryview else 0
        for chunk in queue[keep:]:
            self.queued -= len(chunk)
        del queue[keep:]

    def join(self, timeout: float | None) -> bool:
        """Wait for the queue to drain; True if it did."""
        greenlet = self.greenlet
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.join(timeout)
        return self.greenlet is None

    def stop(self) -> None:
        greenlet, self.greenlet = self.greenlet, None
        if greenlet is not None and greenlet is not gevent.getcurrent():
            greenlet.kill(block=False)
        self.queue, self.queued = [], 0

    def _enqueue(self, data: bytes | memoryview, payload: bytes | bytearray | memoryview | None) -> None:
        if payload is not None:
            data = b"".join((data, payload))
        self.queue.append(data)
        self.queued += len(data)

    def _start(self) -> None:
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._drain)

    def _drain(self) -> None:
        transport = self.transport
        me = gevent.getcurrent()
        try:
            while self.queue and not transport.closed:
                queue, self.queue = self.queue, []
                data = queue[0] if len(queue) == 1 else b"".join(queue)
                # The batch in flight counts until the peer has taken it: a reader
                # that never reads holds one limit's worth of memory, not two.
                transport.sendall(data)
                if self.greenlet is not me:  # stopped while sending: the writer is not ours any more
                    return
                self.queued -= len(data)
                self._unchecked += len(data)
        except OSError:
            if self.greenlet is not me:
                return
            self.queue, self.queued = [], 0
            self.greenlet = None
            self._failed()
            return
        if self.greenlet is not me:
            return
        self.greenlet = None
        if self.eof_pending:
            self.eof_pending = False
            transport.send_eof()

    def _failed(self) -> None:
        try:
            self._owner._abort()
        except Exception:
            logger.exception("handling a failed send")
