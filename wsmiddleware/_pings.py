"""Pings sent by a connection and the waiters their pongs resolve."""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any

import gevent
from gevent.event import AsyncResult

from .exceptions import ConnectionTimeout, WebSocketError

__all__ = ["PingWaiter", "Pings"]

_monotonic = time.monotonic


class _WouldDeadlock(WebSocketError, RuntimeError):
    """Waiting for a pong in the only greenlet that can read it."""


class PingWaiter:
    """Waitable returned by :meth:`WebSocket.ping`; resolved by the matching pong."""

    __slots__ = ("payload", "sent_at", "timeout", "_result", "_pings")

    def __init__(self, payload: bytes, timeout: float | None, pings: Pings | None = None) -> None:
        self.payload = payload
        self.sent_at = _monotonic()
        self.timeout = timeout
        self._result: AsyncResult = AsyncResult()
        self._pings = pings

    def ready(self) -> bool:
        """Whether the pong arrived (or the connection closed)."""
        return self._result.ready()

    def wait(self, timeout: float | None = -1.0) -> float:
        """Block until the pong arrives; return the round-trip time in seconds.

        Raises :class:`ConnectionTimeout` after ``timeout`` seconds (default: the
        connection's ``ping_timeout``) and :class:`ConnectionClosed` if the
        connection ends first.
        """
        if timeout == -1.0:
            timeout = self.timeout
        pings = self._pings
        if pings is not None and pings.reader_is_current() and not self._result.ready():
            # The pong can only be read by this very greenlet: waiting here would deadlock.
            raise _WouldDeadlock("cannot wait for a pong inside a callback; wait in websocket.spawn(...) instead")
        try:
            return self._result.get(timeout=timeout)
        except gevent.Timeout:
            # Forget the ping, or a peer that never answers would grow the table.
            if pings is not None:
                pings.forget(self)
            raise ConnectionTimeout(f"no pong within {timeout} s") from None

    def _resolve(self) -> None:
        self._result.set(_monotonic() - self.sent_at)

    def _abort(self, exc: BaseException) -> None:
        if not self._result.ready():
            self._result.set_exception(exc)


class Pings:
    """The pings of one connection waiting for their pongs, oldest first."""

    __slots__ = ("_pending", "_owner")

    def __init__(self, owner: Any) -> None:
        # Made on the first ping: most connections only ever see keepalive ones.
        self._pending: OrderedDict[bytes, PingWaiter] | None = None
        #: The connection, whose ``_reader`` is its reading greenlet (or None). Held
        #: rather than a bound method: one object less for every connection.
        self._owner = owner

    def reader_is_current(self) -> bool:
        return gevent.getcurrent() is self._owner._reader

    def new(self, payload: bytes | str | None, timeout: float | None) -> PingWaiter:
        pending = self._pending
        if pending is None:
            pending = self._pending = OrderedDict()
        if payload is None:
            payload = os.urandom(4)
            while payload in pending:
                payload = os.urandom(4)
        elif isinstance(payload, str):
            payload = payload.encode("utf-8")
        else:
            payload = bytes(payload)
        if payload in pending:
            raise ValueError("a ping with this payload is already waiting for its pong")
        waiter = pending[payload] = PingWaiter(payload, timeout, self)
        return waiter

    def forget(self, waiter: PingWaiter) -> None:
        if self._pending is not None and self._pending.get(waiter.payload) is waiter:
            del self._pending[waiter.payload]

    def pong(self, payload: bytes) -> None:
        """A pong acknowledges its ping and every ping sent before it."""
        pending = self._pending
        if not pending or payload not in pending:
            return
        while pending:
            key, waiter = pending.popitem(last=False)
            waiter._resolve()
            if key == payload:
                break

    def abort_all(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, None
        for waiter in (pending or {}).values():
            waiter._abort(exc)
