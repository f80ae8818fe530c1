"""``RedisPubSub``: pub/sub across processes and hosts, through Redis (redis-py).

Per process: ONE subscriber connection, whatever the number of channels and
WebSockets, read by one greenlet that fans messages out to local subscribers;
publishing goes through a small connection pool. Nothing is created before
first use, and a forked child starts afresh, so an instance made at import
time in a gunicorn master is safe: each worker opens its own connections.

When Redis goes away the reader logs it once, retries with capped exponential
backoff (with jitter) and re-subscribes everything when Redis is back; the
WebSockets stay open meanwhile. ``publish`` raises :class:`PubSubError` at once
when Redis refuses the connection, and within the socket timeouts otherwise.

Wire format of a message (the payload of ``PUBLISH``): one type byte, then
the body. ``0x01`` text (UTF-8), ``0x02`` binary; ``0x03`` / ``0x04`` are the
same with a 16-byte origin (process token + sender number) before the body,
used only to spare a sender its own message. A payload starting with any other
byte comes from a foreign publisher (``redis-cli PUBLISH room:x hello``): it is
text if it is valid UTF-8, else binary. A foreign publisher whose text may
start with a byte from 0x01 to 0x04 should prefix it with 0x01 (0x02 for binary).

How it sits on redis-py and gevent (details in ``_redis_io``): only redis-py's
public API (``Redis.from_url``, ``Redis.publish``, ``Redis.pubsub()`` and the
``PubSub`` methods, ``Connection.can_read``, ``Retry``), on redis-py 5.0 to 8.x.

* Monkey-patched process (``gunicorn -k gevent``, ``wsmiddleware.server``):
  redis-py's sockets are gevent's, so its calls run inline in the calling
  greenlet, and the reader is a greenlet waiting in ``can_read``. No thread.
* Not monkey-patched (``gevent.monkey.is_module_patched("socket")`` is false):
  redis-py would block the hub, so every redis-py call runs in a thread of
  gevent's hub threadpool (``threadpool.apply``): the calling greenlet waits
  cooperatively while the rest of the process runs on. The reader greenlet
  hands its thread "wait up to ``ping_interval`` for data, then read all that
  has arrived" and delivers what comes back itself: subscribers are only ever
  called in the hub's thread. A lock serialises the calls into the PubSub
  object (not thread-safe); publishes use at most half the threadpool.

Why the threadpool: it is gevent's documented way to run blocking code, needs
no thread of our own to start, stop and re-create after a fork, and keeps one
reader loop for both cases; the alternative, gevent sockets under redis-py
without patching, needs redis-py's private ``_connect`` and ``_sock``. Its
cost, measured on loopback without patching against that former gevent-socket
version (figures in brackets), in this suite's scenario of 3 greenlets
publishing 125 messages to 500 subscribers: a thread round trip takes about
40 µs, a publish about 100 µs (70), all 62,500 deliveries are done after
55-60 ms (25-40; ``test_fan_out_...`` takes 0.3-0.4 s (0.3)), and 4
publishing greenlets reach 5,000-6,000 messages/s (10,000): the threads and
the hub share the GIL. Responses that arrive together come back in one round
trip. Patched, nothing changed: everything inline, ~10,000 messages/s.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import Event

from ..exceptions import PubSubError
from . import _redis_history as stream
from . import _redis_io as io
from ._redis_io import ProcessState, redis
from ._redis_presence import Presence
from ._redis_reader import Reader
from ._redis_wire import decode_message, encode_message, redis_glob
from .base import Message, PubSub, Subscriber, check_message
from .history import History, HistorySizes, Position

__all__ = ["RedisPubSub", "encode_message", "decode_message", "redis_glob"]

logger = logging.getLogger("wsmiddleware.pubsub.redis")

_INSTANCES: weakref.WeakSet[RedisPubSub] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for instance in list(_INSTANCES):
        instance._forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisPubSub(Presence, Reader, PubSub):
    """Pub/sub through Redis, shared by every process using the same server.

    ``url`` is a redis-py URL (``redis://``, ``unix://``, ``rediss://``); extra
    keyword ``options`` go to redis-py's ``Redis.from_url`` (``password``,
    ``socket_timeout``, ``max_connections``...). It cooperates with gevent
    with or without monkey-patching (see the module docstring).

    Own options: ``reconnect_delay`` and ``max_reconnect_delay`` (the backoff
    bounds, seconds), ``ping_interval`` (an idle subscriber connection is
    checked with a PING this often, so that a silent network failure is found),
    ``subscribe_timeout`` (the longest ``subscribe`` waits for Redis to confirm).

    ``publish`` returns how many Redis subscriber connections (about: how many
    processes with a matching subscription) received the message.

    ``history``: keep the last N messages of every channel (an ``int``), or of
    the channels matching each glob (``{"chat:*": 100}``, first match wins), in
    a Redis stream per channel beside its epoch and head offset (see
    :mod:`._redis_history`); ``history_ttl``: seconds after the last publish
    before a channel's history expires (the next message then starts a new
    epoch); ``key_prefix``: the prefix of those keys. Every process publishing
    to such a channel must be configured with the same history, since the
    publisher appends. With history, :meth:`resume` replays what a subscriber
    missed, and this process's reader fills its own gaps from the stream: when
    its subscription drops and comes back, or a message arrives whose offset
    skips some, the missing ones are read and delivered first, in order, so a
    Redis restart or a network blip loses nothing for local subscribers of
    exact channels (pattern subscriptions are not filled). Messages that foreign
    publishers (``redis-cli PUBLISH``) send bypass the history.

    ``presence_ttl``: seconds within which the members a process joined
    (:meth:`join`, ``PubSubWS(presence=True)``) expire once it dies without
    leaving; each process refreshes its own every ``presence_ttl / 3`` (see
    :mod:`._redis_presence`).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        ping_interval: float = 10.0,
        subscribe_timeout: float = 2.0,
        history: int | Mapping[str, int] | None = None,
        history_ttl: float | None = None,
        key_prefix: str = "wsm:",
        presence_ttl: float = 20.0,
        **options: Any,
    ) -> None:
        super().__init__()
        if isinstance(presence_ttl, bool) or not isinstance(presence_ttl, (int, float)) or not presence_ttl > 0:
            raise ValueError(f"presence_ttl is a number of seconds > 0, not {presence_ttl!r}")
        self.presence_ttl = float(presence_ttl)
        self._sizes = HistorySizes(history)
        if history_ttl is not None and history_ttl <= 0:
            raise ValueError(f"history_ttl is a number of seconds > 0, not {history_ttl!r}")
        self.history_ttl = history_ttl
        self._keys = stream.Keys(key_prefix)
        self.url = url
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.ping_interval = ping_interval
        self.subscribe_timeout = subscribe_timeout
        self._options = io.publish_options(options)
        self._where = self._describe(url)
        self._state: ProcessState | None = None
        _INSTANCES.add(self)

    def __repr__(self) -> str:
        return f"<RedisPubSub {self._where} subscriptions={self.subscription_count()}>"

    @staticmethod
    def _describe(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"

    # -- public API -------------------------------------------------------------

    def subscribe(self, channel: str, client: Subscriber, *, pattern: bool | None = None) -> None:
        key = self._key(channel, pattern)
        self._check_open()
        local = self._local()
        if not key[0] and key[1] not in local.positions and self.history_size(channel):
            self._track(local, channel)
        self._subscriptions.add(key, client)
        if local.reader is None:
            local.reader = gevent.spawn(self._run, local)
        if gevent.getcurrent() is local.reader:
            # A subscriber's callback subscribing: waiting here would wait for ourselves.
            self._sync(local, key)
            return
        if not local.attempted.is_set():
            local.attempted.wait(self.subscribe_timeout)
        event = self._sync(local, key)
        if event is not None and not event.wait(self.subscribe_timeout):
            logger.warning("Redis at %s did not confirm the subscription to %r within %s s",
                           self._where, channel, self.subscribe_timeout)

    def unsubscribe(self, channel: str, client: Subscriber, *, pattern: bool | None = None) -> None:
        key = self._key(channel, pattern)
        emptied = self._subscriptions.remove(key, client)
        local = self._state
        if local is None or local.pid != os.getpid() or self._closed:
            return
        self._forget_sender(client)
        if emptied:
            if not key[0]:
                local.positions.pop(key[1], None)
            self._sync(local, key)

    def publish(self, channel: str, message: Message, *, sender: Subscriber | None = None,
                message_id: str | None = None) -> int:
        """Publish through Redis; see the class docstring for the return value.

        ``message_id`` (channels with history only) makes retrying safe: a
        publish that raised :class:`PubSubError` may still have reached Redis
        (a timeout, a connection lost before the answer), and publishing again
        with the same id within an hour does nothing (and returns 0).
        """
        self._key(channel, False)
        message = check_message(message)
        self._check_open()
        local = self._local()
        data = encode_message(message, self._origin(local, sender))
        size = self._sizes.of(channel) if self._sizes else 0
        if message_id is not None and not size:
            raise ValueError(f"message_id needs history on the channel, and {channel!r} has none")
        if not local.publishers.acquire(timeout=self._options.get("socket_timeout") or 3.0):
            raise PubSubError(f"cannot publish to {channel!r}: every connection to Redis at {self._where} is busy")
        try:
            wire = channel.encode("utf-8", "surrogateescape")
            if size:
                receivers: int = max(0, local.io(
                    stream.publish, self._scripts(local), local.client, self._keys.of(channel), wire, data, size,
                    self.history_ttl, None if message_id is None else message_id.encode("utf-8", "surrogateescape"),
                )[0])
            else:
                receivers = local.io(io.publish, local, wire, data)
        except (redis.RedisError, OSError) as exc:
            raise PubSubError(
                f"cannot publish to {channel!r}: Redis at {self._where} is unavailable ({exc})"
            ) from exc
        finally:
            local.publishers.release()
        if not local.ready and local.reader is not None:
            local.wake.set()  # Redis answers again: the reader need not finish its backoff
        return receivers

    # -- history ------------------------------------------------------------------

    def history_size(self, channel: str) -> int:
        return self._sizes.of(channel) if self._sizes else 0

    def history(self, channel: str, *, after: Position | None = None, limit: int | None = None) -> History:
        """The kept messages of ``channel`` (see :meth:`PubSub.history`), read from Redis.

        Raises :class:`PubSubError` when Redis cannot be reached.
        """
        self._key(channel, False)
        self._check_open()
        size = self.history_size(channel)
        local = self._local()
        try:
            if not size:
                return History("", 0, [], False)
            if after is None:
                count = size if limit is None else min(limit, size)
                epoch, head, raw = self._read(local, channel, "last" if count else "none", count or "")
            else:
                epoch, head, raw = self._read(local, channel, "after", after.offset + 1, "",
                                              "" if limit is None else limit)
        except (redis.RedisError, OSError) as exc:
            raise PubSubError(f"cannot read the history of {channel!r}: Redis at {self._where} is unavailable "
                              f"({exc})") from exc
        entries = [(offset, decode_message(payload)[0]) for offset, payload in stream.entries_after(raw, head - size)]
        return stream.history(epoch, head, size, after, entries)

    def _read(self, local: ProcessState, channel: str, mode: str = "none", first: int | str = "",
              last: int | str = "", count: int | str = "") -> tuple[str, int, list[Any]]:
        return local.io(stream.read, self._scripts(local), local.client, self._keys.of(channel), self.history_ttl,
                        mode, first, last, count)  # type: ignore[no-any-return]

    def _take_over(self, channel: str, client: Subscriber, caught_up: Position) -> None:
        # The seam of resume() keeps the channel subscribed on the wire: only the local
        # table changes, and subscribe()'s wait for Redis's confirmation is skipped. A fill
        # of the channel's gap under way delivers across its own wait for Redis: the
        # seam must stay in its place (and hold what comes) until the fill is over.
        # And the history read through another connection may be ahead of this
        # process's subscriber connection: what the client got from history must have
        # come live too (to the seam, which drops it) before the client takes over.
        local = self._state
        deadline = time.monotonic() + self.subscribe_timeout
        while local is not None and time.monotonic() < deadline:
            done = local.filling.get(channel)
            if done is not None:
                done.wait(max(0.0, deadline - time.monotonic()))
                continue
            seen = local.positions.get(channel)
            if seen is None or seen.epoch != caught_up.epoch or seen.offset >= caught_up.offset or not local.ready:
                break
            gevent.sleep(0.001)
        self._subscriptions.add((False, channel), client)

    def _scripts(self, local: ProcessState) -> stream.Scripts:
        if local.scripts is None:
            local.scripts = stream.Scripts(local.client)
        return local.scripts  # type: ignore[no-any-return]

    def _track(self, local: ProcessState, channel: str) -> None:
        """Note where ``channel`` stands before subscribing: the reader fills from there."""
        try:
            epoch, head, _ = self._read(local, channel)
        except (redis.RedisError, OSError) as exc:
            logger.debug("cannot read the head of %r before subscribing: %s", channel, exc)
            return
        local.positions.setdefault(channel, Position(epoch, head))

    def close(self) -> None:
        self._presence_close()  # before the connections go: this process's members leave Redis
        self._closed = True
        self._subscriptions.clear()
        local, self._state = self._state, None
        if local is None:
            return
        local.stale = True
        if local.pid != os.getpid():
            return
        reader, local.reader = local.reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)
        pubsub = self._detach(local)
        local.io_soon(io.shutdown, local, pubsub, wait=self._options.get("socket_timeout") or 3.0)

    @property
    def connected(self) -> bool:
        """Whether this process's subscriber connection is up (False before first use)."""
        local = self._state
        return local is not None and local.ready and local.pid == os.getpid()

    # -- process-local state ------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PubSubError("this RedisPubSub is closed")

    def _local(self) -> ProcessState:
        local = self._state
        if local is not None and local.pid != os.getpid():
            self._forget_parent()
            local = self._state
        if local is None:
            socket_timeout = self._options.get("socket_timeout")
            local = self._state = ProcessState(self.url, self._options, socket_timeout or max(self.ping_interval, 1.0))
        return local

    def _forget_parent(self) -> None:
        """In a forked child: drop the parent's connections and reader, keep the subscriptions."""
        local, self._state = self._state, None
        if local is None or local.pid == os.getpid():
            self._state = local
            return
        local.stale = True
        self._presence_forget()
        io.forget_after_fork(local)
        reader, local.reader = local.reader, None
        if reader is not None:
            # It may wait for a thread that the fork did not copy.
            try:
                reader.kill(block=False)
            except Exception:  # pragma: no cover - defensive: never fail a fork
                logger.debug("stopping the parent's Redis reader failed", exc_info=True)
        if self._subscriptions.count and not self._closed:
            fresh = self._local()
            fresh.reader = gevent.spawn(self._run, fresh)

    # -- subscriptions on the wire -----------------------------------------------------

    def _sync(self, local: ProcessState, key: tuple[bool, str]) -> Event | None:
        """Bring Redis in line with the local wish for ``key``; return an ack to wait for."""
        with local.lock:
            wanted = key in self._subscriptions
            have = key in local.sent
            wire = self._wire(key)
            pattern = key[0]
            if not local.ready:
                return None
            if wanted and have:
                return local.acks.get((pattern, wire))
            if wanted:
                # Registered before sending: the reader may handle the confirmation (and
                # the first messages) before the send returns here, as it can when a
                # thread sends.
                event = local.acks.get((pattern, wire))
                if event is None:
                    event = local.acks[(pattern, wire)] = Event()
                if pattern:
                    local.wire_patterns[wire] = key[1]
                if not local.io(io.command, local, local.pubsub, "psubscribe" if pattern else "subscribe", wire):
                    if local.acks.get((pattern, wire)) is event:
                        del local.acks[(pattern, wire)]
                    if pattern:
                        local.wire_patterns.pop(wire, None)
                    return None
                local.sent.add(key)
                return event
            if have:
                local.sent.discard(key)
                if pattern:
                    local.wire_patterns.pop(wire, None)
                local.io(io.command, local, local.pubsub, "punsubscribe" if pattern else "unsubscribe", wire)
            return None

    def _origin(self, local: ProcessState, sender: Subscriber | None) -> bytes | None:
        if sender is None or not self._subscriptions.subscribed(sender):
            return None
        serial = local.serial_of.get(sender)
        if serial is None:
            serial = next(local.serials)
            local.serial_of[sender] = serial
            local.client_of[serial] = sender
        return local.token + serial.to_bytes(8, "big")

    def _forget_sender(self, client: Subscriber) -> None:
        local = self._state
        if local is None or self._subscriptions.subscribed(client):
            return
        serial = local.serial_of.pop(client, None)
        if serial is not None:
            local.client_of.pop(serial, None)
