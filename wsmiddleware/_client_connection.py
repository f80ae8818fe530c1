"""The open client connection (:class:`ClientConnection`) and its inbox; made by
:func:`wsmiddleware.client.connect`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.queue
from websockets.http11 import Response

from .connection import PingWaiter, WebSocket
from .exceptions import ConnectionClosed, ConnectionTimeout
from .handler import WS

__all__ = ["ClientConnection", "CLOSED", "take", "until_closed"]


def take(queue: gevent.queue.Queue, timeout: float | None, ended: bool,
         closed_error: Callable[[], ConnectionClosed]) -> str | bytes:
    """The next message of a connection's queue: ``ConnectionTimeout`` after
    ``timeout``; ``closed_error()`` at the end marker :data:`CLOSED` (left for the
    next caller: closed stays closed), or at once when the reader has ``ended``
    with nothing queued."""
    if ended and queue.empty():
        raise closed_error()
    try:
        item = queue.get(timeout=timeout)
    except gevent.queue.Empty:
        raise ConnectionTimeout(f"no message within {timeout} s") from None
    if item is CLOSED:
        queue.put_nowait(CLOSED)
        raise closed_error()
    return item  # type: ignore[no-any-return]


def until_closed(receive: Callable[[], str | bytes]) -> Iterator[str | bytes]:
    """What ``receive()`` gives until a close; a close other than 1000/1001 raises."""
    while True:
        try:
            yield receive()
        except ConnectionClosed as exc:
            if exc.code in (1000, 1001):
                return
            raise


class _Inbox(WS):
    """The handler of a connection opened without one: queues what arrives."""

    def __init__(self, max_queue: int | None) -> None:
        self.queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=max_queue)
        self.discarding = False

    def on_message(self, websocket: WebSocket, message: str) -> None:
        if not self.discarding:
            # A full queue blocks the read loop: TCP back-pressure on the sender.
            self.queue.put(message)

    on_bytes = on_message  # type: ignore[assignment]

    def on_close(self, websocket: WebSocket) -> None:
        # Wake a receiver blocked on an empty queue; a full one wakes it anyway.
        try:
            self.queue.put_nowait(CLOSED)
        except gevent.queue.Full:
            pass

    def discard(self) -> None:
        """Drop what is queued so that a read loop blocked on a full queue can end."""
        self.discarding = True
        while True:
            try:
                self.queue.get_nowait()
            except gevent.queue.Empty:
                return


CLOSED = object()


class ClientConnection:
    """An open client connection, returned by :func:`connect`.

    ``websocket`` is the engine's :class:`~wsmiddleware.WebSocket` (the object a
    handler's callbacks receive); the common parts of its API are repeated here.
    Use as a context manager to close the connection on the way out.
    """

    def __init__(self, websocket: WebSocket, response: Response, inbox: _Inbox | None) -> None:
        self.websocket = websocket
        #: The server's ``101`` answer (``status_code``, ``headers``).
        self.response = response
        self._inbox = inbox
        self._greenlet: gevent.Greenlet = gevent.spawn(websocket.run)

    def __repr__(self) -> str:
        return f"<ClientConnection {self.websocket!r}>"

    # -- the websocket's API ----------------------------------------------------

    def write(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a text (``str``) or binary message; raises ConnectionClosed once closed."""
        self.websocket.write(message)

    send = write

    def ping(self, payload: bytes | str | None = None) -> PingWaiter:
        """Send a ping; ``.wait()`` on the result gives the round trip in seconds."""
        return self.websocket.ping(payload)

    def pong(self, payload: bytes | str = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat)."""
        self.websocket.pong(payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake and return; see :meth:`wait_closed`."""
        self.websocket.close(code, reason)

    @property
    def closed(self) -> bool:
        """True once the closing handshake started or the connection ended."""
        return self.websocket.closed

    @property
    def close_code(self) -> int | None:
        return self.websocket.close_code

    @property
    def close_reason(self) -> str | None:
        return self.websocket.close_reason

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server picked, or ``None``."""
        return self.websocket.subprotocol

    @property
    def state(self) -> dict[str, Any]:
        """Per-connection data, as on the server side."""
        return self.websocket.state

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The headers of the server's ``101`` answer."""
        return list(self.response.headers.raw_items())

    # -- waiting ----------------------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises :class:`ConnectionTimeout` after ``timeout`` seconds and
        :class:`ConnectionClosed` (with the close code) once the connection is
        closed and every message that arrived before has been received.
        """
        inbox = self._inbox
        if inbox is None:
            raise TypeError("receive() is for connections opened without a handler; the handler gets the messages")
        return take(inbox.queue, timeout, self._greenlet.dead, self._closed_error)

    recv = receive

    def __iter__(self) -> Iterator[str | bytes]:
        """Messages until the connection closes; a close other than 1000/1001 raises."""
        return until_closed(self.receive)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the connection has ended (``on_close`` ran); False on timeout."""
        self._greenlet.join(timeout=timeout)
        return self._greenlet.dead

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or 1006, self.close_reason or "")

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
        if self._inbox is not None:
            self._inbox.discard()
        if not self.wait_closed(self.websocket.options.close_timeout + 1.0):
            # The close timer aborts the TCP connection; this only guards a stuck callback.
            self._greenlet.kill(block=True, timeout=1.0)
