"""The ``websocket`` object handed to handler callbacks: its read loop and closing handshake.

Frames come from the ``websockets`` sans-I/O protocol (public API only), data
frames are joined by :class:`~wsmiddleware._messages.Assembler`, bytes go out
through :class:`~wsmiddleware._writer.Writer`, and deadlines (keepalive pings,
pong timeouts, idle readers) are kept by the hub's ticker
(:mod:`wsmiddleware._keepalive`), which calls :meth:`WebSocket.on_deadline`.

One greenlet at a time reads and dispatches callbacks, in order. Where the
transport allows it, a connection with nothing to read *parks*: its reader
greenlet ends, and a new one starts when the peer sends something. A fresh
connection parks as soon as it waits; a reading one once it has been idle for
:data:`PARK_AFTER` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State

from ._fanout import broadcast
from ._frames import _as_message, _opcode_and_payload, encode_frame, large_frame_header
from ._keepalive import ticker
from ._messages import Assembler
from ._pings import Pings, PingWaiter
from ._reading import PARK_AFTER, ReadLoop
from ._writer import Writer
from .exceptions import ConnectionClosed
from .options import Options

if TYPE_CHECKING:  # pragma: no cover
    import webob

    from .transport import Transport

__all__ = ["WebSocket", "PingWaiter", "encode_frame", "broadcast", "PARK_AFTER"]

logger = logging.getLogger("wsmiddleware.connection")

_OPEN, _CLOSED = State.OPEN, State.CLOSED
_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY
_monotonic = time.monotonic

#: From this payload size on, a message goes out as its frame header and the payload
#: itself in one vectored write: serializing would copy the payload two or three times.
VECTORED_SIZE = 65536


class WebSocket(ReadLoop):
    """One WebSocket connection, as seen by handler callbacks.

    Attributes users read: ``request`` (the handshake's ``webob.Request``),
    ``environ``, ``path``, ``url_vars``, ``subprotocol``, ``remote_addr``,
    ``state`` (a dict for per-connection data), ``close_code`` and
    ``close_reason`` (set once closed), ``dropped`` (messages discarded by the
    ``"drop"`` slow-consumer policy).
    """

    __slots__ = (
        "_request", "environ", "path", "url_vars", "subprotocol", "remote_addr", "state", "dropped",
        "shares_frames", "__weakref__",
    )

    def __init__(self, transport: Transport, protocol: Protocol, handler: Any, options: Options, *,
                 request: webob.Request | None = None, environ: dict[str, Any] | None = None,
                 url_vars: dict[str, Any] | None = None, subprotocol: str | None = None,
                 compressed: bool = False, client: bool = False, registry: Any = None,
                 integration: Any = None) -> None:
        self.transport = transport
        self.protocol = protocol
        self.handler = handler
        self.options = options
        self._request = request
        self.environ = environ if environ is not None else {}
        self.path: str = (self.environ.get("SCRIPT_NAME", "") + self.environ.get("PATH_INFO", "")) or "/"
        self.url_vars: dict[str, Any] = url_vars if url_vars is not None else {}
        self.subprotocol = subprotocol
        self.remote_addr: str | None = transport.remote_addr
        self.state: dict[str, Any] = {}
        self.dropped = 0
        #: Whether this connection sends the very bytes :func:`encode_frame` makes
        #: (a server connection without extensions): broadcasts then encode once.
        self.shares_frames = not client and not compressed
        self._writer = Writer(transport, self)
        self._assembler: Assembler | None = None  # made by the first fragmented message
        self._pings = Pings(self)
        self._open = True
        self._done = False
        self._close_sent: tuple[int, str] | None = None
        self._close_rcvd: tuple[int, str] | None = None
        self._close_timer: gevent.Greenlet | None = None
        self._greenlets: set[gevent.Greenlet] | None = None
        self._ka_ping: PingWaiter | None = None
        self._reader: gevent.Greenlet | None = None
        self._last_recv = _monotonic()
        self._registry = registry
        self._tie: Any = None
        self._ticker = ticker()
        self._integration = integration
        self._skip = 0
        self._head = b""

    @property
    def request(self) -> webob.Request:
        """The handshake request, as a ``webob.Request`` over :attr:`environ` (built on first use)."""
        request = self._request
        if request is None:
            import webob

            request = self._request = webob.Request(self.environ)
        return request

    @request.setter
    def request(self, request: webob.Request | None) -> None:
        self._request = request

    def __repr__(self) -> str:
        state = "OPEN" if self._open else "CLOSED" if self._done else "CLOSING"
        return f"<WebSocket {self.path} from {self.remote_addr} {state}>"

    # -- state ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the closing handshake started or the connection ended."""
        return not self._open

    @property
    def close_code(self) -> int | None:
        """The close code: the peer's, else ours, else 1006; ``None`` while open."""
        found = self._close_info()
        return None if found is None else found[0]

    @property
    def close_reason(self) -> str | None:
        """The close reason matching :attr:`close_code`; ``None`` while open."""
        found = self._close_info()
        return None if found is None else found[1]

    def _close_info(self) -> tuple[int, str] | None:
        if self._open:
            return None
        for known in (self._close_rcvd, self._close_sent):
            if known is not None:
                return known
        if self.protocol.state is _CLOSED:
            exc = self.protocol.close_exc
            close = exc.rcvd or exc.sent
            if close is not None:
                return int(close.code), close.reason
        return 1006, ""

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or 1006, self.close_reason or "")

    # -- sending ----------------------------------------------------------------------

    def write(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a text (``str``) or binary message; safe from any greenlet.

        Raises :class:`ConnectionClosed` once the connection is closing or closed.
        """
        if not self._open:
            raise self._closed_error()
        if type(message) is not str:
            message = _as_message(message)
        writer = self._writer
        if writer.owed() >= self.options.send_queue_limit and self._overflow():
            return
        if self.shares_frames:
            opcode, payload = _opcode_and_payload(message)
            if len(payload) >= VECTORED_SIZE:
                writer.send(large_frame_header(opcode, len(payload)), payload)
            else:
                writer.send(Frame(opcode, payload).serialize(mask=False))
            return
        try:
            if type(message) is str:
                self.protocol.send_text(message.encode("utf-8"))
            else:
                self.protocol.send_binary(message)  # type: ignore[arg-type]
        except InvalidState:
            raise self._closed_error() from None
        self._flush()

    send = write

    def __call__(self, channel: str, message: str | bytes) -> None:
        """A connection is a pub/sub subscriber: it writes what its channels get."""
        try:
            self.write(message)
        except ConnectionClosed:
            pass

    @staticmethod
    def deliver_group(websockets: list[WebSocket], channel: str, message: str | bytes) -> int:
        """Pub/sub hands all connection subscribers of a message over at once: one encoding."""
        return broadcast(websockets, message)

    def send_prepared(self, frame: bytes) -> bool:
        """Queue a frame made by :func:`encode_frame`; only where :attr:`shares_frames`.

        Returns False if the connection is not open or the policy dropped the message.
        """
        if not self._open:
            return False
        if not self.shares_frames:
            raise TypeError(f"{self!r} cannot take a prepared server frame (client side or compressed)")
        if self._writer.owed() >= self.options.send_queue_limit and self._overflow():
            return False
        self._writer.send(frame if type(frame) is bytes else bytes(frame))
        return True

    def ping(self, payload: bytes | str | None = None) -> PingWaiter:
        """Send a ping; the returned waiter resolves when its pong comes back.

        Without ``payload``, a unique random one is used so that only the
        matching pong resolves the waiter.
        """
        if not self._open:
            raise self._closed_error()
        waiter = self._pings.new(payload, self.options.ping_timeout)
        self.protocol.send_ping(waiter.payload)
        self._flush()
        return waiter

    def pong(self, payload: bytes | str = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat); pings are answered already."""
        if not self._open:
            return
        self.protocol.send_pong(payload.encode("utf-8") if isinstance(payload, str) else payload)
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; it is bounded by ``close_timeout``.

        Returns at once: ``on_close`` runs when the peer answers or the time runs out.
        """
        if not self._open:
            return
        self._open = False
        self._close_sent = (code, reason)
        if self.protocol.state is _OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
        self._start_close_timer()

    def spawn(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> gevent.Greenlet:
        """Run ``fn(*args, **kwargs)`` in a greenlet killed when the connection ends.

        The producer pattern: a loop that writes to this websocket. If ``fn``
        raises, it is logged and the connection closes with 1011.
        """
        if self._greenlets is None:
            self._greenlets = set()
        greenlet = gevent.spawn(self._run_spawned, fn, args, kwargs)
        self._greenlets.add(greenlet)
        greenlet.link(self._greenlets.discard)
        if self._done:
            greenlet.kill(block=False)
        return greenlet

    def _run_spawned(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            fn(*args, **kwargs)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("greenlet spawned by %r raised", self)
            self.close(1011, "internal error")

    def _overflow(self) -> bool:
        """Apply the slow-consumer policy to a data message; True means: drop it."""
        if self.options.slow_consumer == "drop":
            self.dropped += 1
            return True
        self._slow_consumer()
        return True

    def _slow_consumer(self) -> None:
        logger.warning("%r: over %d bytes owed, closing slow consumer", self, self.options.send_queue_limit)
        # Frames still waiting are moot for a reader being closed: dropping them
        # frees the memory now and lets the close frame follow what is on its way.
        self._writer.discard_queued()
        self.close(1008, "send queue overflow: client too slow")

    def _flush(self) -> None:
        """Send what the protocol produced; an empty chunk means: end the TCP stream."""
        chunks = self.protocol.data_to_send()
        if chunks:
            self._send_chunks(chunks)

    def _send_chunks(self, chunks: list[bytes]) -> None:
        data = [chunk for chunk in chunks if chunk]
        if data:
            self._writer.send(data[0] if len(data) == 1 else b"".join(data))
        if len(data) != len(chunks):
            self._writer.send_eof()

    def _abort(self) -> None:
        """Drop the TCP connection now; the reader sees the end and cleans up."""
        parked = self.transport.parked
        self.transport.abort()
        if parked:
            self._wake()

    def _start_close_timer(self) -> None:
        if self._close_timer is None and not self._done:
            self._close_timer = gevent.spawn_later(self.options.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if not self._done:
            logger.info("%r: closing handshake timed out after %s s", self, self.options.close_timeout)
            self._abort()
