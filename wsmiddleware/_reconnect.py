"""A client connection that reconnects, and resumes where it was on routes with history.

Made by ``wsmiddleware.connect(url, reconnect=True)``. It offers the recovery
subprotocol ``wsmiddleware.v1`` (:mod:`wsmiddleware.recovery`); when the
server picks it, envelopes are unwrapped, so ``receive()`` gives the plain
messages, and a reconnect asks for everything after the last one received.

Which endings are final (no reconnect): :meth:`ReconnectingConnection.close`;
a close from the server with 1000 (it ended the session on purpose), 1002,
1003, 1007, 1008, 1009 or 1010 (the client did something the server refuses:
trying again would repeat it); a handshake refused with a 4xx status (but 408
and 429). Anything else is retried: 1001 (going away: a deploy), 1006 (the
connection broke), 1011-1014, refused or timed-out connections, 5xx answers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import gevent
import gevent.event
import gevent.queue

from ._client_connection import CLOSED, take, until_closed
from .exceptions import ConnectionClosed, ConnectionRejected, ConnectionTimeout
from .pubsub.history import Position
from .recovery import SINCE, SUBPROTOCOL, parse_frame

__all__ = ["ReconnectingConnection", "backoff", "FINAL_CLOSE_CODES"]

logger = logging.getLogger("wsmiddleware.client")

#: Close codes from the server after which reconnecting would not help.
FINAL_CLOSE_CODES = frozenset({1000, 1002, 1003, 1007, 1008, 1009, 1010})
_RETRIED_STATUSES = frozenset({408, 429})


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds before reconnect attempt ``attempt`` (0 first): capped exponential
    growth, with "equal jitter" (between half and all of it) so that clients
    dropped together do not come back together."""
    delay = min(cap, base * 2 ** min(attempt, 32))
    return delay * (0.5 + rand() / 2)


def with_since(url: str, position: Position | None) -> str:
    """``url`` with its ``wsm_since`` query parameter set to ``position`` (or removed)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != SINCE]
    if position is not None:
        query.append((SINCE, str(position)))
    return urlunsplit(parts._replace(query=urlencode(query)))


class ReconnectingConnection:
    """A client connection that survives the loss of its socket (see the module docstring).

    ``receive()`` and iteration go on across reconnects, waiting while one is
    under way. ``write()`` waits for a connection up to ``write_timeout``
    seconds, then raises :class:`ConnectionClosed`; a message written just as
    a socket broke may be lost (what the server publishes is recovered; what
    the client sent is not resent). ``recovered`` is ``None`` until a
    reconnect, then whether the latest one got every missed message;
    ``position`` is that of the last message received (None without history).
    ``reconnects`` counts the successful ones.
    """

    def __init__(self, url: str, open_one: Callable[[str], Any], *, reconnect_delay: float = 0.1,
                 max_reconnect_delay: float = 10.0, write_timeout: float = 10.0, max_queue: int | None = 64) -> None:
        if reconnect_delay <= 0 or max_reconnect_delay < reconnect_delay:
            raise ValueError("need 0 < reconnect_delay <= max_reconnect_delay")
        self.url = url
        self._open = open_one
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.write_timeout = write_timeout
        self.recovered: bool | None = None
        self.position: Position | None = None
        self.reconnects = 0
        self._queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=max_queue)
        self._up = gevent.event.Event()
        self._stop = gevent.event.Event()  # set by close(): cuts a backoff short
        self._user_closed = False
        self._discarding = False
        self._final: ConnectionClosed | None = None
        self._current: Any = self._open(url)  # the first failure is the caller's, as with connect()
        self._up.set()
        self._runner = gevent.spawn(self._run)

    def __repr__(self) -> str:
        return f"<ReconnectingConnection {self.url} position={self.position} reconnects={self.reconnects}>"

    # -- the running side ----------------------------------------------------------

    def _run(self) -> None:
        reconnecting = False
        while True:
            connection = self._current
            ended = self._pump(connection, reconnecting)
            self._up.clear()
            if self._user_closed:
                break
            if ended.code in FINAL_CLOSE_CODES:
                self._final = ended
                break
            logger.info("connection to %s lost (%s %s); reconnecting", self.url, ended.code, ended.reason)
            connection = self._reconnect()
            if connection is None:
                break
            if self._user_closed:  # close() came while this one was opening
                connection.close()
                break
            self._current = connection
            self.reconnects += 1
            self._up.set()
            reconnecting = True
        try:
            self._queue.put_nowait(CLOSED)  # wakes a receiver waiting on an empty queue
        except gevent.queue.Full:
            pass  # receive() sees the runner dead once the queue is empty

    def _pump(self, connection: Any, reconnecting: bool) -> ConnectionClosed:
        """Move messages from one connection to the queue, unwrapped; return how it ended."""
        envelopes = connection.subprotocol == SUBPROTOCOL
        if reconnecting and not envelopes:
            self.recovered = False  # no way to know what was missed
        while True:
            try:
                item = connection.receive()
            except ConnectionClosed as exc:
                return exc
            if envelopes and isinstance(item, str):
                try:
                    frame = parse_frame(item)
                except ValueError:
                    frame = None
                if frame is not None and frame["type"] == "message":
                    if frame["position"] is not None:
                        self.position = frame["position"]
                    item = frame["data"]
                elif frame is not None and frame["type"] == "recovery":
                    if reconnecting:
                        self.recovered = frame["recovered"] is True
                    if frame["position"] is not None:
                        self.position = frame["position"]
                    continue
            if not self._discarding:
                self._queue.put(item)  # full: reading pauses, TCP back-pressure on the server

    def _reconnect(self) -> Any:
        attempt = 0
        while not self._user_closed:
            if self._stop.wait(backoff(attempt, self.reconnect_delay, self.max_reconnect_delay)):
                return None
            attempt += 1
            try:
                return self._open(with_since(self.url, self.position))
            except ConnectionRejected as exc:
                if 400 <= exc.status < 500 and exc.status not in _RETRIED_STATUSES:
                    logger.warning("reconnecting to %s refused with %s: giving up", self.url, exc.status)
                    self._final = ConnectionClosed(1008, f"reconnect refused with HTTP {exc.status}")
                    return None
                logger.debug("reconnecting to %s: %s", self.url, exc)
            except (OSError, ConnectionTimeout, ConnectionClosed) as exc:
                logger.debug("reconnecting to %s: %s", self.url, exc)
        return None

    # -- the user's side -------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message (across reconnects); ``ConnectionTimeout`` after ``timeout``,
        ``ConnectionClosed`` once closed for good and everything before was received."""
        return take(self._queue, timeout, self._runner.dead, self._closed_error)

    recv = receive

    def __iter__(self) -> Iterator[str | bytes]:
        """Messages until closed for good; an ending other than 1000/1001 raises."""
        return until_closed(self.receive)

    def write(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a message, waiting up to ``write_timeout`` for a connection."""
        deadline = time.monotonic() + self.write_timeout
        while not self._user_closed and self._final is None:
            if self._up.wait(max(0.0, deadline - time.monotonic())):
                try:
                    self._current.write(message)
                    return
                except ConnectionClosed:
                    gevent.sleep(0)  # the runner notices the loss and reconnects
            if time.monotonic() >= deadline:
                break
        raise self._closed_error() if self._user_closed or self._final else ConnectionClosed(
            1006, f"not reconnected within {self.write_timeout} s")

    send = write

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close for good: no reconnect after this."""
        self._user_closed = True
        self._stop.set()
        self._current.close(code, reason)

    def wait_closed(self, timeout: float | None = None) -> bool:
        self._runner.join(timeout=timeout)
        return self._runner.dead

    @property
    def closed(self) -> bool:
        """True once closed for good (by :meth:`close`, or a final ending)."""
        return self._user_closed or self._final is not None or self._runner.dead

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now."""
        return self._up.is_set() and not self._current.closed

    @property
    def close_code(self) -> int | None:
        return self._final.code if self._final is not None else self._current.close_code

    @property
    def subprotocol(self) -> str | None:
        return self._current.subprotocol  # type: ignore[no-any-return]

    def _closed_error(self) -> ConnectionClosed:
        if self._final is not None:
            return self._final
        return ConnectionClosed(self._current.close_code or 1006, self._current.close_reason or "")

    def __enter__(self) -> ReconnectingConnection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
        self._discarding = True  # what nobody will receive must not hold the runner up
        while True:
            try:
                self._queue.get_nowait()
            except gevent.queue.Empty:
                break
        self._current.__exit__(*exc_info)
        if not self.wait_closed(2.0):
            self._runner.kill(block=True, timeout=1.0)
