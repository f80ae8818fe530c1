"""Presence in Redis for :class:`~wsmiddleware.pubsub.RedisPubSub`, refreshed per process.

A mixin of ``RedisPubSub`` (as :class:`._redis_reader.Reader` is). Keys, per
channel (the channel is the hash tag, as for history, so that one channel's
keys share a cluster slot):

* ``<prefix>{<channel>}:presence``, a sorted set of the **process tokens**
  (random, one per process and instance) that have members on the channel,
  scored by the time their members expire (Redis's clock, seconds);
* ``<prefix>{<channel>}:presence:<token>``, a hash per process: member id ->
  info (JSON), with a ``PEXPIRE`` of ``presence_ttl``.

The expiry belongs to the process, not to each connection: a refresher
greenlet (started by the first join, gone when the process has no member
left) re-``PEXPIRE``s the hash and re-``ZADD``s the token of every channel
this process has members on, every ``presence_ttl / 3`` seconds. So a process
that dies without a word (SIGKILL, a lost host) has its members vanish within
``presence_ttl``, and the cost is one pipeline per process per period,
whatever the number of connections.

The members live first in this process (``_Members.channels``), the source of
truth: Redis holds a copy. A write that fails (Redis away) is not raised
into the connection: the outage is logged once, joins and leaves go on
locally, and the next refresh that reaches Redis rewrites the hash of every
channel whole (``MULTI``: ``DEL`` + ``HSET`` + expiries), which also covers a
Redis restart without persistence and a ``FLUSHALL``: a refresh whose
``PEXPIRE`` finds no hash rewrites it.

Time: scores use Redis's clock (``TIME``), never the hosts' own, so that hosts
with skewed clocks agree on who is alive. Each process keeps the offset of
Redis's clock from its monotonic clock, measured with ``TIME`` at the first
write and at each refresh, and computes scores from it without a round trip.
:meth:`presence` reads ``TIME`` with the set, keeps the tokens scored after
it, reads their hashes in one pipeline and removes (``ZREM``) the dead ones.

Fork: the members belong to the process that joined them; a forked child (a
gunicorn worker of a master that made the instance) starts with none and
never refreshes its parent's.

redis-py API used: ``Redis.time``, ``Redis.pipeline`` and on it ``hset``,
``hdel``, ``hgetall``, ``delete``, ``pexpire``, ``zadd``, ``zrangebyscore``,
``zrem``, ``time``, ``execute``; always through ``ProcessState.io``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import gevent
import gevent.lock

from ..exceptions import PubSubError
from ._redis_io import ProcessState, redis
from .base import PubSub

logger = logging.getLogger("wsmiddleware.pubsub.redis.presence")

__all__ = ["Presence"]

_ERRORS = (redis.RedisError, OSError)


class _Members:
    """This process's members (the source of truth) and the state of their copy in Redis."""

    __slots__ = ("pid", "token", "channels", "dirty", "down", "offset", "refresher", "lock", "skipped")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.token = os.urandom(8).hex().encode("ascii")
        #: channel -> member -> info (JSON text)
        self.channels: dict[str, dict[str, str]] = {}
        #: channels whose copy in Redis may be wrong: rewritten whole by the next refresh
        self.dirty: set[str] = set()
        #: Redis unreachable since a write failed: writes wait for the refresher
        self.down = False
        #: Redis's clock minus time.monotonic(), once measured
        self.offset: float | None = None
        self.refresher: gevent.Greenlet | None = None
        # Serialises this process's presence writes, so that a refresh's rewrite
        # (from a snapshot) and a join or leave never land in Redis out of order.
        self.lock = gevent.lock.BoundedSemaphore(1)
        #: how many writes were left to the refresher: one during its rewrite keeps the channels dirty
        self.skipped = 0


# -- the I/O side: each runs through ProcessState.io ---------------------------------


def _clock(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1_000_000


def _run(client: Any, ops: list[tuple[Any, ...]], transaction: bool) -> list[Any]:
    """One pipeline of ``(method, *args)`` commands; their results."""
    pipe = client.pipeline(transaction=transaction)
    for name, *args in ops:
        getattr(pipe, name)(*args)
    return pipe.execute()  # type: ignore[no-any-return]


def _workers(client: Any, zset: bytes) -> tuple[float, list[tuple[bytes, float]]]:
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.zrangebyscore(zset, "-inf", "+inf", withscores=True)
    (seconds, micros), entries = pipe.execute()
    return float(seconds) + micros / 1_000_000, entries


def _hashes(client: Any, keys: list[bytes], zset: bytes, dead: list[bytes]) -> list[dict[bytes, bytes]]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    if dead:
        pipe.zrem(zset, *dead)
    results = pipe.execute()
    return results[: len(keys)]  # type: ignore[no-any-return]


class Presence:
    """``join`` / ``leave`` / ``presence`` of ``RedisPubSub``; it provides the attributes below."""

    _state: ProcessState | None
    _closed: bool
    _where: str
    _keys: Any
    presence_ttl: float
    _presence_state: _Members | None = None

    if TYPE_CHECKING:  # provided by RedisPubSub (a stub here would shadow it in the MRO)
        def _local(self) -> ProcessState: ...
        def _check_open(self) -> None: ...
        def _key(self, channel: str, pattern: bool | None) -> tuple[bool, str]: ...

    # -- keys ---------------------------------------------------------------------------

    def _zset(self, channel: str) -> bytes:
        return f"{self._keys.prefix}{{{channel}}}:presence".encode("utf-8", "surrogateescape")

    def _hash(self, channel: str, token: bytes) -> bytes:
        return self._zset(channel) + b":" + token

    # -- process-local state ------------------------------------------------------------

    def _members(self, create: bool) -> _Members | None:
        state = self._presence_state
        if state is not None and state.pid != os.getpid():
            state = self._presence_state = None  # a forked child: the parent's members are not ours
        if state is None and create:
            state = self._presence_state = _Members()
        return state

    def _presence_forget(self) -> None:
        """After a fork, in the child: no members, no refresher (it would refresh the parent's)."""
        state, self._presence_state = self._presence_state, None
        if state is not None and state.refresher is not None:
            try:
                state.refresher.kill(block=False)
            except Exception:  # pragma: no cover - defensive: never fail a fork
                logger.debug("stopping the parent's presence refresher failed", exc_info=True)

    def _presence_close(self) -> None:
        """On close: this process's members leave Redis now rather than at expiry."""
        state = self._members(False)
        self._presence_state = None
        if state is None:
            return
        if state.refresher is not None and state.refresher is not gevent.getcurrent():
            state.refresher.kill(block=False)
        local = self._state
        channels = set(state.channels) | state.dirty
        if local is None or local.pid != os.getpid() or state.down or not channels:
            return
        ops: list[tuple[Any, ...]] = []
        for channel in channels:
            ops += [("delete", self._hash(channel, state.token)), ("zrem", self._zset(channel), state.token)]
        try:
            local.io(_run, local.client, ops, False)
        except _ERRORS as exc:
            logger.debug("removing this process's presence from Redis at %s failed: %s", self._where, exc)

    # -- the API ------------------------------------------------------------------------

    def presence(self, channel: str) -> dict[str, Any]:
        """The members of ``channel`` in every process (this one's from memory).

        Raises :class:`PubSubError` when Redis cannot be reached.
        """
        self._key(channel, False)
        self._check_open()
        local = self._local()
        state = self._members(False)
        own = state.token if state is not None else None
        zset = self._zset(channel)
        if not local.publishers.acquire(timeout=local.read_timeout):
            raise PubSubError(f"cannot read the presence of {channel!r}: every connection to Redis is busy")
        try:
            now, entries = local.io(_workers, local.client, zset)
            live = [token for token, score in entries if score > now and token != own]
            dead = [token for token, score in entries if score <= now]
            hashes = local.io(_hashes, local.client, [self._hash(channel, token) for token in live], zset, dead)
        except _ERRORS as exc:
            raise PubSubError(f"cannot read the presence of {channel!r}: Redis at {self._where} is unavailable "
                              f"({exc})") from exc
        finally:
            local.publishers.release()
        found: dict[str, Any] = {}
        for fields in hashes:
            for member, info in fields.items():
                try:
                    found[member.decode("utf-8", "surrogateescape")] = json.loads(info)
                except ValueError:  # not ours: a foreign writer
                    logger.debug("presence of %r: skipping a member whose info is not JSON", channel)
        if state is not None:
            for member, text in state.channels.get(channel, {}).items():
                found[member] = json.loads(text)
        return found

    def _join(self, channel: str, member: str, info: str) -> None:
        self._check_open()
        state = self._members(True)
        assert state is not None
        state.channels.setdefault(channel, {})[member] = info
        if state.refresher is None:
            state.refresher = gevent.spawn(self._refresh_loop, state)
        self._write(state, channel, [("hset", self._hash(channel, state.token), member, info)])

    def _leave(self, channel: str, member: str) -> str | None:
        state = self._members(False)
        members = state.channels.get(channel) if state is not None else None
        if state is None or not members or member not in members:
            return None
        info = members.pop(member)
        if not members:
            del state.channels[channel]
        if not self._closed:
            self._write(state, channel, [("hdel", self._hash(channel, state.token), member)])
        return info

    def _announce(self, kind: str, channel: str, member: str, info: str) -> None:
        state = self._members(False)
        if state is not None and state.down:
            # Redis is away: a publish would only wait for its timeout, in the connection's greenlet.
            logger.debug("presence %s of %r on %r not announced: Redis is unavailable", kind, member, channel)
            return
        PubSub._announce(self, kind, channel, member, info)  # type: ignore[arg-type]

    # -- writing ------------------------------------------------------------------------

    def _write(self, state: _Members, channel: str, ops: list[tuple[Any, ...]]) -> None:
        """Apply one join or leave to Redis, with the channel's expiries; never raises."""
        if state.down:
            state.dirty.add(channel)
            state.skipped += 1
            return
        with state.lock:
            if state.down or self._presence_state is not state:
                state.dirty.add(channel)
                state.skipped += 1
                return
            local = self._local()
            try:
                if state.offset is None:
                    state.offset = local.io(_clock, local.client) - time.monotonic()
                if channel in state.channels:
                    ops = ops + self._keep_alive(state, channel)
                else:  # its last member left: the process is no longer on the channel
                    ops = [("delete", self._hash(channel, state.token)), ("zrem", self._zset(channel), state.token)]
                local.io(_run, local.client, ops, False)
            except _ERRORS as exc:
                self._outage(state, exc)
                state.dirty.add(channel)

    def _keep_alive(self, state: _Members, channel: str) -> list[tuple[Any, ...]]:
        ttl = self.presence_ttl
        assert state.offset is not None
        expires = time.monotonic() + state.offset + ttl
        milliseconds = max(1, int(ttl * 1000))
        zset = self._zset(channel)
        return [("pexpire", self._hash(channel, state.token), milliseconds),
                ("zadd", zset, {state.token: expires}), ("pexpire", zset, milliseconds)]

    def _outage(self, state: _Members, exc: BaseException) -> None:
        if not state.down:
            logger.warning("presence not written to Redis at %s (%s): members are kept in this process and "
                           "written again when Redis is back", self._where, exc)
        state.down = True
        state.dirty.update(state.channels)

    def _refresh_loop(self, state: _Members) -> None:
        try:
            while True:
                gevent.sleep(self.presence_ttl / 3)
                if self._presence_state is not state or self._closed or state.pid != os.getpid():
                    return
                if not state.channels and not state.dirty:
                    return
                with state.lock:
                    self._refresh(state)
        finally:
            if state.refresher is gevent.getcurrent():
                state.refresher = None

    def _refresh(self, state: _Members) -> None:
        """Extend every channel's expiry; rewrite whole those whose copy may be wrong or gone."""
        local = self._local()
        try:
            state.offset = local.io(_clock, local.client) - time.monotonic()
            clean = [channel for channel in state.channels if channel not in state.dirty]
            ops: list[tuple[Any, ...]] = []
            for channel in clean:
                ops += self._keep_alive(state, channel)
            results = local.io(_run, local.client, ops, False) if ops else []
            for index, channel in enumerate(clean):
                if not results[3 * index]:  # PEXPIRE of a missing hash: flushed, restarted, or expired
                    state.dirty.add(channel)
            dirty = list(state.dirty)
            skipped = state.skipped
            if dirty:
                ops = []
                for channel in dirty:
                    key = self._hash(channel, state.token)
                    members = state.channels.get(channel)
                    ops.append(("delete", key))
                    if members:
                        # hset(name, key, value, mapping): a copy, a thread may be the one sending it
                        ops += [("hset", key, None, None, dict(members)), *self._keep_alive(state, channel)]
                    else:
                        ops.append(("zrem", self._zset(channel), state.token))
                # MULTI: no reader ever sees the hash between DEL and HSET.
                local.io(_run, local.client, ops, True)
                if state.skipped == skipped:  # else a change came meanwhile: rewrite again next time
                    state.dirty.difference_update(dirty)
        except _ERRORS as exc:
            self._outage(state, exc)
            return
        if state.down:
            state.down = False
            logger.warning("presence written again to Redis at %s: %d channel(s)", self._where, len(state.channels))
