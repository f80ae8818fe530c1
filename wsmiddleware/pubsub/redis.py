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
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import socket
import time
import weakref
from typing import Any, cast
from urllib.parse import urlsplit

import gevent
import gevent.lock
import gevent.socket
from gevent.event import Event

from ..exceptions import PubSubError
from .base import Message, PubSub, Subscriber, check_message, deliver

try:
    import redis
    import redis.connection
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("RedisPubSub needs redis-py: pip install 'wsmiddleware[redis]'") from exc

__all__ = ["RedisPubSub", "encode_message", "decode_message", "redis_glob"]

logger = logging.getLogger("wsmiddleware.pubsub.redis")

_TEXT, _BINARY, _TEXT_FROM, _BINARY_FROM = 1, 2, 3, 4
_ORIGIN_SIZE = 16
_TEXT_TAG, _BINARY_TAG = b"\x01", b"\x02"
_TEXT_FROM_TAG, _BINARY_FROM_TAG = b"\x03", b"\x04"
_SUBSCRIBE_BATCH = 256


def encode_message(message: Message, origin: bytes | None = None) -> bytes:
    """The ``PUBLISH`` payload of ``message`` (see the module docstring)."""
    if type(message) is str:
        body = message.encode("utf-8")
        if origin is None:
            return _TEXT_TAG + body
        return _TEXT_FROM_TAG + origin + body
    binary = cast(bytes, message)
    if origin is None:
        return _BINARY_TAG + binary
    return _BINARY_FROM_TAG + origin + binary


def decode_message(data: bytes) -> tuple[Message, bytes | None]:
    """``(message, origin)`` from a ``PUBLISH`` payload, ours or a foreign one."""
    tag = data[0] if data else 0
    origin = None
    if tag == _TEXT or tag == _BINARY:
        body = data[1:]
    elif (tag == _TEXT_FROM or tag == _BINARY_FROM) and len(data) > _ORIGIN_SIZE:
        origin = data[1 : 1 + _ORIGIN_SIZE]
        body = data[1 + _ORIGIN_SIZE :]
        tag -= 2
    else:
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            return data, None
    if tag == _BINARY:
        return body, origin
    try:
        return body.decode("utf-8"), origin
    except UnicodeDecodeError:
        # A foreign publisher mislabelled it: deliver the bytes rather than lose them.
        return body, origin


def redis_glob(pattern: str) -> str:
    """Translate an fnmatch pattern to Redis glob syntax with the same meaning.

    fnmatch has no escape character and negates sets with ``!``; Redis treats
    ``\\`` as an escape and negates with ``^``.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: fnmatch reads a literal "["
                out.append("\\[")
                continue
            body = pattern[i:j]
            i = j + 1
            out.append("[")
            if body.startswith("!"):
                out.append("^")
                body = body[1:]
            out.append("".join("\\" + ch if ch in "\\]^[" else ch for ch in body))
            out.append("]")
        elif c == "\\":
            out.append("\\\\")
        else:
            out.append(c)
    return "".join(out)


# -- cooperative connections --------------------------------------------------------


class _GeventConnection(redis.connection.Connection):
    """A redis-py TCP connection on a gevent socket, cooperative without monkey-patching."""

    def _connect(self) -> Any:
        error: OSError | None = None
        for family, kind, proto, _, address in gevent.socket.getaddrinfo(
            self.host, self.port, self.socket_type, socket.SOCK_STREAM
        ):
            sock = gevent.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.socket_keepalive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    for option, value in self.socket_keepalive_options.items():
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
                sock.settimeout(self.socket_connect_timeout)
                sock.connect(address)
                sock.settimeout(self.socket_timeout)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error or OSError(f"cannot resolve {self.host}:{self.port}")


class _GeventUnixConnection(redis.connection.UnixDomainSocketConnection):
    """A redis-py Unix-socket connection on a gevent socket."""

    def _connect(self) -> Any:
        sock = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.socket_connect_timeout)
            sock.connect(self.path)
            sock.settimeout(self.socket_timeout)
        except OSError:
            sock.close()
            raise
        return sock


_CONNECTION_CLASSES: dict[str, type] = {"redis": _GeventConnection, "unix": _GeventUnixConnection}


# -- per-process state --------------------------------------------------------------


class _Local:
    """What belongs to one process: connections, reader greenlet, origin token."""

    def __init__(self, pool: Any, max_publishers: int) -> None:
        self.pid = os.getpid()
        self.pool = pool
        self.client = redis.Redis(connection_pool=pool)
        self.publishers = gevent.lock.BoundedSemaphore(max_publishers)
        # Serialises writes on the subscriber connection and the decisions about
        # what it is subscribed to, so that concurrent subscribe/unsubscribe of
        # one channel and a reconnection can never leave Redis out of step.
        self.lock = gevent.lock.RLock()
        self.token = os.urandom(8)
        self.reader: gevent.Greenlet | None = None
        #: Set once the first connection attempt has succeeded or failed.
        self.attempted = Event()
        self.conn: Any = None
        self.sock: Any = None
        self.ready = False
        self.sent: set[tuple[bool, str]] = set()
        self.wire_patterns: dict[bytes, str] = {}
        self.acks: dict[tuple[bool, bytes], Event] = {}
        self.serial_of: dict[Any, int] = {}
        self.client_of: dict[int, Any] = {}
        self.serials = itertools.count(1)
        self.stale = False


_INSTANCES: weakref.WeakSet[RedisPubSub] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for instance in list(_INSTANCES):
        instance._forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RedisPubSub(PubSub):
    """Pub/sub through Redis, shared by every process using the same server.

    ``url`` is a redis-py URL (``redis://``, ``unix://``, ``rediss://``); extra
    keyword ``options`` go to redis-py's connection pool (``password``,
    ``socket_timeout``, ``max_connections``...). The connections use gevent
    sockets for ``redis://`` and ``unix://`` URLs, so they cooperate even
    without monkey-patching; ``rediss://`` relies on it (as under
    ``gunicorn -k gevent``).

    Own options: ``reconnect_delay`` and ``max_reconnect_delay`` (the backoff
    bounds, seconds), ``ping_interval`` (an idle subscriber connection is
    checked with a PING this often, so that a silent network failure is found),
    ``subscribe_timeout`` (the longest ``subscribe`` waits for Redis to confirm).

    ``publish`` returns how many Redis subscriber connections (about: how many
    processes with a matching subscription) received the message.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        ping_interval: float = 10.0,
        subscribe_timeout: float = 2.0,
        **options: Any,
    ) -> None:
        super().__init__()
        self.url = url
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.ping_interval = ping_interval
        self.subscribe_timeout = subscribe_timeout
        pool_options: dict[str, Any] = {
            "socket_timeout": 3.0,
            "socket_connect_timeout": 2.0,
            "max_connections": 50,
            # PUBLISH is not idempotent: no silent retries; the caller gets PubSubError.
            "retry": Retry(NoBackoff(), 0),
        }
        pool_options.update(options)
        pool_options["decode_responses"] = False
        scheme = urlsplit(url).scheme
        if "connection_class" not in options and scheme in _CONNECTION_CLASSES:
            pool_options["connection_class"] = _CONNECTION_CLASSES[scheme]
        self._pool_options = pool_options
        self._where = self._describe(url)
        self._state: _Local | None = None
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
            self._sync(local, key)

    def publish(self, channel: str, message: Message, *, sender: Subscriber | None = None) -> int:
        """Publish through Redis; see the class docstring for the return value."""
        self._key(channel, False)
        message = check_message(message)
        self._check_open()
        local = self._local()
        data = encode_message(message, self._origin(local, sender))
        if not local.publishers.acquire(timeout=self._pool_options.get("socket_timeout") or 3.0):
            raise PubSubError(f"cannot publish to {channel!r}: every connection to Redis at {self._where} is busy")
        try:
            return local.client.publish(channel.encode("utf-8", "surrogateescape"), data)
        except (redis.RedisError, OSError) as exc:
            raise PubSubError(
                f"cannot publish to {channel!r}: Redis at {self._where} is unavailable ({exc})"
            ) from exc
        finally:
            local.publishers.release()

    def close(self) -> None:
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
        self._drop_connection(local)
        local.pool.disconnect()

    @property
    def connected(self) -> bool:
        """Whether this process's subscriber connection is up (False before first use)."""
        local = self._state
        return local is not None and local.ready and local.pid == os.getpid()

    # -- process-local state ------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PubSubError("this RedisPubSub is closed")

    def _local(self) -> _Local:
        local = self._state
        if local is not None and local.pid != os.getpid():
            self._forget_parent()
            local = self._state
        if local is None:
            pool = redis.ConnectionPool.from_url(self.url, **self._pool_options)
            local = self._state = _Local(pool, self._pool_options.get("max_connections") or 50)
        return local

    def _forget_parent(self) -> None:
        """In a forked child: drop the parent's connections and reader, keep the subscriptions."""
        local, self._state = self._state, None
        if local is None or local.pid == os.getpid():
            self._state = local
            return
        local.stale = True
        conn, local.conn, local.sock = local.conn, None, None
        if conn is not None:
            # redis-py closes only this process's copy of the socket after a fork,
            # which also wakes the inherited reader greenlet so that it exits.
            conn.disconnect()
        if self._subscriptions.count and not self._closed:
            fresh = self._local()
            fresh.reader = gevent.spawn(self._run, fresh)

    def _current(self, local: _Local) -> bool:
        return (
            self._state is local
            and not local.stale
            and not self._closed
            and local.pid == os.getpid()
            and local.reader is gevent.getcurrent()
        )

    # -- subscriptions on the wire -----------------------------------------------------

    @staticmethod
    def _wire(key: tuple[bool, str]) -> bytes:
        pattern, name = key
        return (redis_glob(name) if pattern else name).encode("utf-8", "surrogateescape")

    def _send(self, local: _Local, *args: Any) -> bool:
        """Write one command on the subscriber connection; False if it is down."""
        sock = local.sock
        if sock is None:
            return False
        try:
            sock.sendall(b"".join(local.conn.pack_command(*args)))
            return True
        except OSError as exc:
            # The reader sees the same broken connection and reconnects.
            logger.debug("writing to the Redis subscriber connection failed: %s", exc)
            return False

    def _sync(self, local: _Local, key: tuple[bool, str]) -> Event | None:
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
                if not self._send(local, "PSUBSCRIBE" if pattern else "SUBSCRIBE", wire):
                    return None
                local.sent.add(key)
                if pattern:
                    local.wire_patterns[wire] = key[1]
                event = local.acks.get((pattern, wire))
                if event is None:
                    event = local.acks[(pattern, wire)] = Event()
                return event
            if have:
                local.sent.discard(key)
                if pattern:
                    local.wire_patterns.pop(wire, None)
                self._send(local, "PUNSUBSCRIBE" if pattern else "UNSUBSCRIBE", wire)
            return None

    def _origin(self, local: _Local, sender: Subscriber | None) -> bytes | None:
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

    # -- the reader greenlet --------------------------------------------------------------

    def _run(self, local: _Local) -> None:
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
                gevent.sleep(delay * (0.5 + random.random() / 2))
        finally:
            if local.reader is gevent.getcurrent() and local.pid == os.getpid():
                self._drop_connection(local)

    def _open(self, local: _Local) -> tuple[int, int]:
        """Connect the subscriber connection and subscribe to everything wanted."""
        # RESP2: pub/sub replies are plain arrays, without the RESP3 push machinery
        # (which formats a debug string for every message), and redis-py's
        # maintenance notifications need RESP3, so they stay off here.
        options = {
            name: value for name, value in local.pool.connection_kwargs.items()
            if not name.startswith(("maint_notifications", "oss_cluster_maint"))
        }
        options["protocol"] = 2
        # Names the connection in CLIENT LIST: one per process, whatever the channels.
        options["client_name"] = f"wsmiddleware-sub-{local.pid}"
        conn = local.pool.connection_class(**options)
        conn.connect()
        with local.lock:
            local.conn = conn
            # redis-py keeps the connected socket in ``_sock``; writes to it come
            # from other greenlets while this one reads (see _send).
            local.sock = conn._sock
            local.ready = True
            local.sent.clear()
            local.wire_patterns.clear()
            keys = self._subscriptions.keys()
            channels = [self._wire(key) for key in keys if not key[0]]
            patterns = [(self._wire(key), key[1]) for key in keys if key[0]]
            for start in range(0, len(channels), _SUBSCRIBE_BATCH):
                if not self._send(local, "SUBSCRIBE", *channels[start : start + _SUBSCRIBE_BATCH]):
                    raise redis.ConnectionError("lost while re-subscribing")
            for start in range(0, len(patterns), _SUBSCRIBE_BATCH):
                batch = patterns[start : start + _SUBSCRIBE_BATCH]
                if not self._send(local, "PSUBSCRIBE", *[wire for wire, _ in batch]):
                    raise redis.ConnectionError("lost while re-subscribing")
                local.wire_patterns.update(batch)
            local.sent.update(keys)
            # Subscribers arriving now wait for these confirmations like any other.
            for wire in channels:
                local.acks[(False, wire)] = Event()
            for wire, _ in patterns:
                local.acks[(True, wire)] = Event()
        return len(channels), len(patterns)

    def _listen(self, local: _Local) -> None:
        conn = local.conn
        waiting_for_pong = False
        while True:
            if conn.can_read(timeout=self.ping_interval):
                self._handle(local, conn.read_response(push_request=True))
                waiting_for_pong = False
                continue
            if waiting_for_pong:
                raise redis.ConnectionError(f"no answer to PING within {self.ping_interval} s")
            with local.lock:
                if not self._send(local, "PING"):
                    raise redis.ConnectionError("the subscriber connection broke")
            waiting_for_pong = True

    def _handle(self, local: _Local, response: Any) -> None:
        if not isinstance(response, list) or not response:
            return
        kind = response[0]
        if kind == b"message":
            channel, data = response[1], response[2]
            key = (False, channel.decode("utf-8", "surrogateescape"))
        elif kind == b"pmessage":
            name = local.wire_patterns.get(response[1])
            if name is None:
                return
            channel, data = response[2], response[3]
            key = (True, name)
        elif kind == b"subscribe" or kind == b"psubscribe":
            event = local.acks.pop((kind == b"psubscribe", response[1]), None)
            if event is not None:
                event.set()
            return
        else:
            return
        clients = self._subscriptions.of(key)
        if not clients:
            return
        message, origin = decode_message(data)
        exclude = None
        if origin is not None and origin[:8] == local.token:
            exclude = local.client_of.get(int.from_bytes(origin[8:], "big"))
        try:
            deliver(clients, channel.decode("utf-8", "surrogateescape"), message, exclude)
        except Exception:
            # A fan-out bug must not pass for a Redis failure and cost every process a reconnect.
            logger.exception("delivering a message of %r failed", channel)

    def _drop_connection(self, local: _Local) -> None:
        with local.lock:
            local.ready = False
            local.sent.clear()
            local.wire_patterns.clear()
            conn, local.conn, local.sock = local.conn, None, None
            acks, local.acks = local.acks, {}
        for event in acks.values():
            event.set()
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # a connection that is already broken may fail to close
                logger.debug("closing the Redis subscriber connection failed", exc_info=True)
