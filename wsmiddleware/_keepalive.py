"""Keepalive deadlines: a timer heap, so that a tick costs what is due, not what is open.

Walking every connection each period cost CPU in proportion to the idle sockets and
forced the period down to the shortest interval of any of them. Here each connection
holds one deadline in a heap; the single driver greenlet per hub sleeps until the
earliest one and only touches the connections that are due.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

import gevent
from gevent.hub import Hub, Waiter

__all__ = ["BATCH", "Deadlines", "DeadlineItem", "Ticker", "ticker"]

logger = logging.getLogger("wsmiddleware.keepalive")

#: Items handled between two turns of the event loop (about 0.1 ms of work).
BATCH = 128
#: Any positive sleep lets the loop poll for I/O; ``sleep(0)`` may only run callbacks.
YIELD_S = 1e-6
#: Below this many stale entries a rebuild would cost more than the memory it frees.
MIN_STALE = 64

T = TypeVar("T", bound=Hashable)


class DeadlineItem(Hashable, Protocol):
    """What the Ticker drives: returns its next deadline, or None to stop."""

    def on_deadline(self, now: float) -> float | None: ...


class Deadlines(Generic[T]):
    """A lazy min-heap of ``(when, seq, item)`` with at most one live entry per item.

    Moving a deadline pushes a new entry rather than searching the heap for the old
    one; the old one is recognised as stale when it surfaces. ``seq`` breaks ties so
    that items themselves are never compared.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        # The live entry object itself: liveness is an identity test, exact even when
        # an item is discarded and rescheduled at the same time.
        self._live: dict[T, tuple[float, int, T]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, item: object) -> bool:
        return item in self._live

    def schedule(self, item: T, when: float) -> bool:
        """Make ``when`` the item's deadline unless it already has one at or before it."""
        if when != when:  # NaN would never come due and would corrupt the heap order
            raise ValueError("deadline is NaN")
        live = self._live.get(item)
        if live is not None and live[0] <= when:
            # It is asked then anyway and answers with its real next deadline.
            return False
        entry = (when, next(self._seq), item)
        self._live[item] = entry
        heapq.heappush(self._heap, entry)
        if live is not None:
            self._compact_if_stale()
        return True

    def discard(self, item: T) -> None:
        if self._live.pop(item, None) is not None:
            self._compact_if_stale()

    def pop_due(self, now: float, limit: int | None = None) -> list[T]:
        """Remove and return the items due at ``now``, earliest first, at most ``limit``."""
        heap, live = self._heap, self._live
        due: list[T] = []
        while heap and (limit is None or len(due) < limit):
            entry = heap[0]
            if live.get(entry[2]) is not entry:
                heapq.heappop(heap)
            elif entry[0] <= now:
                heapq.heappop(heap)
                del live[entry[2]]
                due.append(entry[2])
            else:
                break
        return due

    def next_due(self) -> float | None:
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _compact_if_stale(self) -> None:
        # Amortised O(1): a rebuild of n entries follows at least n/2 stale pushes.
        stale = len(self._heap) - len(self._live)
        if stale > MIN_STALE and 2 * stale > len(self._heap):
            self._heap = list(self._live.values())
            heapq.heapify(self._heap)


class Ticker:
    """Calls ``item.on_deadline(now)`` when an item's deadline comes; one per hub.

    Not thread-safe: use it from the greenlets of one hub (see :func:`ticker`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadlines: Deadlines[DeadlineItem] = Deadlines()
        self._greenlet: gevent.Greenlet | None = None
        # Set only while the driver sleeps, so that an earlier deadline can cut it short.
        self._waiter: Waiter | None = None
        self._hub: Hub | None = None
        self._until = float("inf")

    @property
    def running(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead

    def pending(self) -> int:
        return len(self._deadlines)

    def schedule(self, item: DeadlineItem, when: float) -> bool:
        # The common case first, without a call: a reader that waits again is due no sooner.
        live = self._deadlines._live.get(item)
        if live is not None and live[0] <= when:
            return False
        if not self._deadlines.schedule(item, when):
            return False
        if not self.running:
            self._greenlet = gevent.spawn(self._run)
        elif when < self._until:
            self._wake()
        return True

    def discard(self, item: DeadlineItem) -> None:
        self._deadlines.discard(item)
        if not self._deadlines:
            self._wake()  # so that the driver ends now rather than at a stale deadline

    def _wake(self) -> None:
        waiter, hub = self._waiter, self._hub
        if waiter is not None and hub is not None:
            # Waiter.switch must run in the hub; clearing _waiter makes it one wake-up.
            self._waiter, self._until = None, float("-inf")
            hub.loop.run_callback(waiter.switch, None)

    def _run(self) -> None:
        try:
            while (due := self._deadlines.next_due()) is not None:
                now = self._clock()
                if due > now:
                    self._sleep(due - now, due)
                    continue  # woken early or by a coarse timer: look again
                self._fire(now)
                next_due = self._deadlines.next_due()
                if next_due is not None and next_due <= self._clock():
                    # More is due: let I/O in between batches.
                    gevent.sleep(YIELD_S)
        finally:
            if self._greenlet is gevent.getcurrent():
                self._greenlet = None

    def _sleep(self, delay: float, until: float) -> None:
        hub = gevent.get_hub()
        waiter = Waiter(hub)
        timer = hub.loop.timer(delay)
        self._waiter, self._hub, self._until = waiter, hub, until
        try:
            timer.start(waiter.switch, None)
            waiter.get()
        finally:
            timer.close()
            # Drop the hub: the per-hub map is weak on it and values must not pin keys.
            self._waiter, self._hub, self._until = None, None, float("inf")

    def _fire(self, now: float) -> None:
        batch = self._deadlines.pop_due(now, BATCH)
        done = 0
        try:
            for item in batch:
                try:
                    when = item.on_deadline(now)
                except Exception:
                    # One broken connection must not stop the others' keepalive.
                    logger.exception("keepalive deadline of %r failed; dropping it", item)
                    self._deadlines.discard(item)
                    when = None
                if when is not None:
                    self._deadlines.schedule(item, when)
                done += 1
        finally:
            # Killed mid-batch (the one being handled included): the rest stay due,
            # for the next driver to handle, rather than silently losing keepalive.
            for item in batch[done:]:
                self._deadlines.schedule(item, now)


_tickers: weakref.WeakKeyDictionary[Hub, Ticker] = weakref.WeakKeyDictionary()


def ticker() -> Ticker:
    """The Ticker of the current thread's hub (greenlets cannot cross hubs)."""
    hub = gevent.get_hub()
    found = _tickers.get(hub)
    if found is None:
        found = _tickers[hub] = Ticker()
    return found
