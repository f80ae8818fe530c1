"""The reader greenlet of :class:`~wsmiddleware.pubsub.RedisPubSub`: connect, re-subscribe, read, fan out.

A mixin of ``RedisPubSub`` (see :mod:`wsmiddleware.pubsub.redis`); it reaches
redis-py only through :mod:`._redis_io`, as the rest does.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event

from . import _redis_io as io
from ._redis_history import entries_after
from ._redis_io import ProcessState, redis
from ._redis_wire import decode_message, decode_positioned, redis_glob
from .base import Subscriptions, deliver
from .history import Position

logger = logging.getLogger("wsmiddleware.pubsub.redis")

_MESSAGE = b"message"


@contextmanager
def _filling(local: ProcessState, channel: str) -> Iterator[None]:
    """Mark a fill of ``channel``'s gap as under way (resume() waits for its end)."""
    done = local.filling[channel] = Event()
    try:
        yield
    finally:
        local.filling.pop(channel, None)
        done.set()


class Reader:
    """The per-process reader loop; ``RedisPubSub`` provides the attributes below."""

    _state: ProcessState | None
    _closed: bool
    _subscriptions: Subscriptions
    _where: str
    reconnect_delay: float
    max_reconnect_delay: float
    ping_interval: float

    if TYPE_CHECKING:  # provided by RedisPubSub (a stub here would shadow it in the MRO)
        def history_size(self, channel: str) -> int: ...
        def _read(self, local: ProcessState, channel: str, mode: str = "none", first: int | str = "",
                  last: int | str = "", count: int | str = "") -> tuple[str, int, list[Any]]: ...

    def _current(self, local: ProcessState) -> bool:
        return (
            self._state is local
            and not local.stale
            and not self._closed
            and local.pid == os.getpid()
            and local.reader is gevent.getcurrent()
        )

    @staticmethod
    def _wire(key: tuple[bool, str]) -> bytes:
        pattern, name = key
        return (redis_glob(name) if pattern else name).encode("utf-8", "surrogateescape")

    def _run(self, local: ProcessState) -> None:
        failures = 0
        down_since: float | None = None
        try:
            while self._current(local):
                try:
                    try:
                        channels, patterns = self._open(local)
                    finally:
                        local.attempted.set()
                    if down_since is not None:
                        logger.warning(
                            "Redis pub/sub at %s is back after %.1f s; re-subscribed %d channel(s) and %d pattern(s)",
                            self._where, time.monotonic() - down_since, channels, patterns,
                        )
                    else:
                        logger.info("Redis pub/sub connected to %s (pid %d)", self._where, local.pid)
                    down_since = None
                    failures = 0
                    self._catch_up(local)
                    self._listen(local)
                except Exception as exc:
                    if not self._current(local):
                        return
                    self._drop_connection(local)
                    connection_error = isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))
                    if down_since is None:
                        down_since = time.monotonic()
                        logger.error(
                            "Redis pub/sub at %s is unavailable (%s); WebSockets stay open, "
                            "reconnecting with backoff up to %s s",
                            self._where, exc, self.max_reconnect_delay,
                            exc_info=not connection_error,
                        )
                    elif failures % 10 == 0:
                        logger.warning("Redis pub/sub at %s still unavailable after %.0f s: %s",
                                       self._where, time.monotonic() - down_since, exc)
                    else:
                        logger.debug("Redis pub/sub at %s still unavailable: %s", self._where, exc)
                if not self._current(local):
                    return
                delay = min(self.max_reconnect_delay, self.reconnect_delay * 2 ** min(failures, 30))
                failures += 1
                local.wake.clear()
                local.wake.wait(delay * (0.5 + random.random() / 2))
        finally:
            if local.reader is gevent.getcurrent() and local.pid == os.getpid():
                self._drop_connection(local)

    def _open(self, local: ProcessState) -> tuple[int, int]:
        """Connect the subscriber connection and subscribe to everything wanted."""
        pubsub = local.io(io.connect, local)
        with local.lock:
            if not self._current(local):
                local.io(io.close, local, pubsub)
                raise redis.ConnectionError("closed while connecting")
            local.pubsub = pubsub
            local.ready = True
            local.sent.clear()
            local.wire_patterns.clear()
            keys = self._subscriptions.keys()
            channels = [self._wire(key) for key in keys if not key[0]]
            patterns = [(self._wire(key), key[1]) for key in keys if key[0]]
            local.io(io.resubscribe, local, pubsub, channels, [wire for wire, _ in patterns])
            local.wire_patterns.update(patterns)
            local.sent.update(keys)
            # Subscribers arriving now wait for these confirmations like any other.
            for wire in channels:
                local.acks[(False, wire)] = Event()
            for wire, _ in patterns:
                local.acks[(True, wire)] = Event()
        return len(channels), len(patterns)

    def _listen(self, local: ProcessState) -> None:
        pubsub = local.pubsub
        waiting_for_pong = False
        while self._current(local):
            batch = local.io(io.read, local, pubsub, self.ping_interval)
            if batch is None:
                if waiting_for_pong:
                    raise redis.ConnectionError(f"no answer to PING within {self.ping_interval} s")
                if not local.io(io.command, local, pubsub, "ping"):
                    raise redis.ConnectionError("the subscriber connection broke")
                waiting_for_pong = True
                continue
            waiting_for_pong = False
            for response in batch:
                self._handle(local, response)
            gevent.sleep(0)  # a stream of messages must not hold the hub

    def _handle(self, local: ProcessState, response: Any) -> None:
        if type(response) is dict:  # anything but a message, from PubSub.handle_message
            kind = response.get("type")
            if kind == "subscribe" or kind == "psubscribe":
                event = local.acks.pop((kind == "psubscribe", response["channel"]), None)
                if event is not None:
                    event.set()
            return
        if response[0] == _MESSAGE:
            channel, data = response[1], response[2]
            key = (False, channel.decode("utf-8", "surrogateescape"))
        else:
            name = local.wire_patterns.get(response[1])
            if name is None:
                return
            channel, data = response[2], response[3]
            key = (True, name)
        clients = self._subscriptions.of(key)
        if not clients:
            return
        message, origin, position = decode_positioned(data)
        name = channel.decode("utf-8", "surrogateescape")
        if position is not None and not key[0]:
            seen = local.positions.get(name)
            if seen is not None and seen.epoch != position.epoch:
                self._lost(name, seen, position.epoch)
                # Every message of the new epoch came after the last one of the old.
                seen = Position(position.epoch, 0)
            if seen is not None:
                if position.offset <= seen.offset:
                    return  # delivered already, from the stream
                if position.offset > seen.offset + 1:
                    with _filling(local, name):
                        self._fill(local, name, seen, position.offset - 1)
                        local.positions[name] = position
                        self._deliver(local, self._subscriptions.of(key), name, message, origin, position)
                    return
            local.positions[name] = position
        self._deliver(local, clients, name, message, origin, position)

    def _deliver(self, local: ProcessState, clients: list[Any], channel: str, message: Any, origin: bytes | None,
                 position: Position | None) -> None:
        exclude = None
        if origin is not None and origin[:8] == local.token:
            exclude = local.client_of.get(int.from_bytes(origin[8:], "big"))
        try:
            deliver(clients, channel, message, exclude, position)
        except Exception:
            # A fan-out bug must not pass for a Redis failure and cost every process a reconnect.
            logger.exception("delivering a message of %r failed", channel)

    def _catch_up(self, local: ProcessState) -> None:
        """After (re)connecting: deliver what each tracked channel got meanwhile."""
        for name, seen in list(local.positions.items()):
            if (False, name) in self._subscriptions and self._current(local):
                with _filling(local, name):
                    self._fill(local, name, seen, None)

    @staticmethod
    def _lost(channel: str, seen: Position, epoch: str) -> None:
        if seen.offset:
            logger.warning("the history of %r was lost (epoch %s, now %s): messages after offset %d of the "
                           "old epoch may not have reached this process", channel, seen.epoch, epoch, seen.offset)

    def _fill(self, local: ProcessState, channel: str, seen: Position, last: int | None, again: bool = True) -> None:
        """Deliver ``channel``'s messages after ``seen`` (up to offset ``last``) from its stream."""
        size = self.history_size(channel)
        try:
            epoch, head, raw = self._read(local, channel, "after", seen.offset + 1, "" if last is None else last)
        except (redis.RedisError, OSError) as exc:
            logger.warning("cannot read the history of %r to fill a gap after offset %d: %s",
                           channel, seen.offset, exc)
            return
        if epoch != seen.epoch:
            self._lost(channel, seen, epoch)
            if again:
                local.positions[channel] = Position(epoch, 0)
                self._fill(local, channel, Position(epoch, 0), None, again=False)
            return
        found = entries_after(raw, max(seen.offset, head - size) if size else seen.offset)
        if found and found[0][0] != seen.offset + 1:
            logger.warning("%d message(s) of %r after offset %d are no longer in its history: they did not "
                           "reach this process", found[0][0] - seen.offset - 1, channel, seen.offset)
        elif not found and last is not None and last > seen.offset:
            logger.warning("messages %d to %d of %r are no longer in its history", seen.offset + 1, last, channel)
        for offset, payload in found:
            current = local.positions.get(channel)
            if current is not None and current.epoch == epoch and current.offset >= offset:
                continue
            clients = self._subscriptions.of((False, channel))
            position = Position(epoch, offset)
            local.positions[channel] = position
            if clients:
                message, origin = decode_message(payload)
                self._deliver(local, clients, channel, message, origin, position)

    def _detach(self, local: ProcessState) -> Any:
        """Forget the subscriber connection (the caller closes it); release the waiters."""
        with local.lock:
            local.ready = False
            local.sent.clear()
            local.wire_patterns.clear()
            pubsub, local.pubsub = local.pubsub, None
            acks, local.acks = local.acks, {}
        for event in acks.values():
            event.set()
        return pubsub

    def _drop_connection(self, local: ProcessState) -> None:
        pubsub = self._detach(local)
        if pubsub is not None:
            local.io(io.close, local, pubsub)
