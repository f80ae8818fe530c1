"""Everything :class:`~wsmiddleware.pubsub.RedisPubSub` asks of redis-py, and where it runs.

One :class:`ProcessState` per process holds the redis-py objects: a
``redis.Redis`` client for ``PUBLISH`` (its own small pool), a second client
whose pool makes the one subscriber connection (RESP2, named, no health checks,
no silent retries), and the current ``redis.client.PubSub``.

The functions below are the only code that calls redis-py. Each runs "on the
I/O side" through :meth:`ProcessState.io`: inline in the calling greenlet when
the process is monkey-patched (redis-py's sockets are gevent's then), or in a
thread of the hub's threadpool when it is not, so that a blocking socket call
never holds the hub. The PubSub object is not thread-safe: every call into it
holds ``io_lock``, with one exception, the reader's wait for data
(``PubSub.connection.can_read(timeout)``), which touches only the read side of
the socket while a writer may be sending SUBSCRIBE or PING. Nothing here raises
out of a thread: gevent's hub would print it; :meth:`ProcessState.io` re-raises
in the greenlet instead.

redis-py API used: ``Redis.from_url``, ``Redis.publish``, ``Redis.pubsub``,
``Redis.close``, ``Redis.register_script`` (history, :mod:`._redis_history`); ``PubSub.subscribe/psubscribe/unsubscribe/punsubscribe/ping/
parse_response/handle_message/close``; ``Connection.can_read``;
``redis.retry.Retry``, ``redis.backoff.NoBackoff``, ``redis.exceptions``.
One name is public but not in redis-py's documentation: the ``PubSub.connection``
attribute (the Connection a PubSub reads from), used only in :func:`read`.
Checked on redis-py 5.0.8 and 8.1.0.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any, cast

import gevent
import gevent.lock
import gevent.monkey
from gevent.event import Event

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("RedisPubSub needs redis-py: pip install 'wsmiddleware[redis]'") from exc

logger = logging.getLogger("wsmiddleware.pubsub.redis")

#: Channels (or patterns) per SUBSCRIBE command when re-subscribing.
SUBSCRIBE_BATCH = 256
#: Most responses read in one go before the reader greenlet delivers them.
READ_BATCH = 256

_MESSAGE, _PMESSAGE = b"message", b"pmessage"
_RealRLock = gevent.monkey.get_original("threading", "RLock")


def publish_options(options: dict[str, Any]) -> dict[str, Any]:
    """redis-py keywords of the publishing client: our defaults, then the user's."""
    merged: dict[str, Any] = {
        "socket_timeout": 3.0,
        "socket_connect_timeout": 2.0,
        "max_connections": 50,
        # PUBLISH is not idempotent: no silent retries; the caller gets PubSubError.
        "retry": Retry(NoBackoff(), 0),
    }
    merged.update(options)
    merged["decode_responses"] = False
    return merged


def subscribe_options(publishing: dict[str, Any], pid: int) -> dict[str, Any]:
    """redis-py keywords of the subscriber connection, from the publishing ones."""
    merged = dict(publishing)
    for name in ("retry_on_timeout", "retry_on_error"):
        merged.pop(name, None)
    merged.update(
        # RESP2: pub/sub replies are plain arrays, without RESP3's push machinery
        # (and redis-py's maintenance notifications, which need RESP3, stay off).
        protocol=2,
        # Names the connection in CLIENT LIST: one per process, whatever the channels.
        client_name=f"wsmiddleware-sub-{pid}",
        # Our reader pings on its own schedule; redis-py's health check would read
        # replies from the writer's side.
        health_check_interval=0,
        # No error is "retryable": redis-py then never reconnects this connection
        # by itself (8.x would, inline, even with 0 retries); the reader does, with backoff.
        retry=Retry(NoBackoff(), 0, supported_errors=()),
        decode_responses=False,
    )
    return merged


def _capture(fn: Any, args: tuple) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as exc:  # handed back to the greenlet: the hub must not print it
        return False, exc


class ProcessState:
    """What belongs to one process: redis-py clients, the reader, subscription bookkeeping."""

    def __init__(self, url: str, options: dict[str, Any], read_timeout: float) -> None:
        self.pid = os.getpid()
        self.hub = gevent.get_hub()
        # Decided once per process (a forked child decides afresh).
        self.cooperative = gevent.monkey.is_module_patched("socket")
        self.threadpool = None if self.cooperative else self.hub.threadpool
        self.client = redis.Redis.from_url(url, **options)
        self.subscriber = redis.Redis.from_url(url, **subscribe_options(options, self.pid))
        self.read_timeout = read_timeout
        limit = options.get("max_connections") or 50
        if self.threadpool is not None:
            # Never take more than half of the hub's threads (DNS and others need some).
            limit = max(1, min(limit, self.threadpool.maxsize // 2))
        self.publishers = gevent.lock.BoundedSemaphore(limit)
        # Serialises the decisions about what the subscriber connection is subscribed
        # to (greenlets only), so that concurrent subscribe/unsubscribe of one channel
        # and a reconnection can never leave Redis out of step.
        self.lock = gevent.lock.RLock()
        # Serialises calls into the PubSub object (threads too, when not patched).
        self.io_lock: Any = gevent.lock.RLock() if self.cooperative else _RealRLock()
        self.token = os.urandom(8)
        self.reader: gevent.Greenlet | None = None
        #: Set once the first connection attempt has succeeded or failed.
        self.attempted = Event()
        self.pubsub: Any = None
        self.ready = False
        self.stale = False
        self.sent: set[tuple[bool, str]] = set()
        self.wire_patterns: dict[bytes, str] = {}
        self.acks: dict[tuple[bool, bytes], Event] = {}
        self.serial_of: dict[Any, int] = {}
        self.client_of: dict[int, Any] = {}
        self.serials = itertools.count(1)
        #: exact channel -> position of the last message handed to its subscribers
        #: (channels with history only): what the reader fills gaps from.
        self.positions: dict[str, Any] = {}
        #: exact channel -> Event set when the reader's fill of its gap is over: resume()
        #: waits for it before handing a subscriber over from its seam.
        self.filling: dict[str, Event] = {}
        #: Set by a publish that succeeds while the reader waits to reconnect.
        self.wake = Event()
        self.scripts: Any = None

    def io(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` where it may block: here if patched, else in a hub thread."""
        if self.threadpool is None or gevent.getcurrent() is self.hub:
            # (The hub itself cannot wait for a thread: only a hub callback gets here.)
            return fn(*args)
        ok, value = self.threadpool.apply(_capture, (fn, args))
        if ok:
            return value
        raise value

    def io_soon(self, fn: Any, *args: Any, wait: float = 0.0) -> None:
        """Run ``fn(*args)`` on the I/O side, waiting at most ``wait`` seconds for it."""
        if self.threadpool is None or gevent.getcurrent() is self.hub:
            _capture(fn, args)
            return
        result = self.threadpool.spawn(_capture, fn, args)
        if wait > 0:
            result.wait(wait)


# -- the I/O side: each runs through ProcessState.io ---------------------------------


def connect(state: ProcessState) -> Any:
    """A new PubSub on a new subscriber connection (connected by a PING)."""
    pubsub = state.subscriber.pubsub()
    try:
        pubsub.ping()
    except BaseException:
        _close_quietly(pubsub)
        raise
    if state.stale:  # closed or forked meanwhile
        _close_quietly(pubsub)
        raise redis.ConnectionError("closed while connecting")
    return pubsub


def resubscribe(state: ProcessState, pubsub: Any, channels: list[bytes], patterns: list[bytes]) -> None:
    """Subscribe a new connection to everything, patterns first.

    It takes several commands, each its own write (and, from a thread, maybe a
    wait for the GIL between them). Patterns go first so that a message that
    reaches the subscribers of its channel also reaches those of its patterns.
    """
    with state.io_lock:
        for start in range(0, len(patterns), SUBSCRIBE_BATCH):
            pubsub.psubscribe(*patterns[start : start + SUBSCRIBE_BATCH])
        for start in range(0, len(channels), SUBSCRIBE_BATCH):
            pubsub.subscribe(*channels[start : start + SUBSCRIBE_BATCH])


def command(state: ProcessState, pubsub: Any, method: str, *args: Any) -> bool:
    """``pubsub.<method>(*args)`` (subscribe, ping...); False if the connection is down."""
    with state.io_lock:
        if state.pubsub is not pubsub or not state.ready:
            return False
        try:
            getattr(pubsub, method)(*args)
            return True
        except (redis.RedisError, OSError) as exc:
            # redis-py closed the socket: the reader sees it and reconnects.
            state.ready = False
            logger.debug("writing to the Redis subscriber connection failed: %s", exc)
            return False


def read(state: ProcessState, pubsub: Any, wait: float) -> list[Any] | None:
    """Responses that arrive within ``wait`` seconds (None: none did).

    Messages come back as redis-py's raw RESP2 arrays (``[b"message", channel,
    data]``, ``[b"pmessage", pattern, channel, data]``), anything else as the
    dict of ``PubSub.handle_message``, which also keeps the PubSub's own
    bookkeeping of (un)subscriptions.
    """
    conn = pubsub.connection
    if conn is None or state.pubsub is not pubsub or not state.ready:
        raise redis.ConnectionError("the subscriber connection broke")
    # The one call without io_lock: a writer may send meanwhile (see the module docstring).
    try:
        if not conn.can_read(timeout=wait):
            return None
    except redis.RedisError:
        raise
    except Exception as exc:  # e.g. a writer's failed send closed the socket under us
        raise redis.ConnectionError(f"the subscriber connection broke ({exc!r})") from exc
    batch: list[Any] = []
    with state.io_lock:
        if state.pubsub is not pubsub:
            raise redis.ConnectionError("the subscriber connection was replaced")
        while len(batch) < READ_BATCH:
            # block=False with a timeout: waits for the rest of a message already
            # begun (redis-py 8 reads with that timeout; 5 with socket_timeout).
            response = pubsub.parse_response(block=False, timeout=state.read_timeout)
            if response is not None:
                if type(response) is list and (response[0] == _MESSAGE or response[0] == _PMESSAGE):
                    batch.append(response)
                else:
                    handled = pubsub.handle_message(response)
                    if handled is not None:
                        batch.append(handled)
            if not conn.can_read(timeout=0):
                break
    return batch


def close(state: ProcessState, pubsub: Any) -> None:
    with state.io_lock:
        _close_quietly(pubsub)


def shutdown(state: ProcessState, pubsub: Any) -> None:
    """Close the subscriber connection and both clients' pools."""
    with state.io_lock:
        if pubsub is not None:
            _close_quietly(pubsub)
        for client in (state.subscriber, state.client):
            try:
                client.close()
            except Exception:
                logger.debug("closing a Redis client failed", exc_info=True)


def publish(state: ProcessState, channel: bytes, data: bytes) -> int:
    return cast(int, state.client.publish(channel, data))


def forget_after_fork(state: ProcessState) -> None:
    """In a forked child: close this process's copy of the parent's subscriber socket.

    ``PubSub.close`` only closes the file descriptor here: redis-py's
    ``disconnect`` skips the shutdown in a process other than the one that
    connected, so the parent's connection lives on. No lock of ours is taken
    (the parent's threads may have held them at the fork).
    """
    if state.pubsub is not None:
        _close_quietly(state.pubsub)


def _close_quietly(pubsub: Any) -> None:
    try:
        pubsub.close()
    except Exception:  # a connection that is already broken may fail to close
        logger.debug("closing the Redis subscriber connection failed", exc_info=True)
