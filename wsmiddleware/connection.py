"""The ``websocket`` object handed to handler callbacks, and its I/O loop.

Frames come from the ``websockets`` sans-I/O protocol; this module adds the
gevent side: one greenlet at a time reads and dispatches callbacks in order, writes
from any greenlet go straight to the socket when nothing is queued and through a
bounded queue drained by a short-lived writer greenlet otherwise, so that a slow
reader never blocks whoever writes to it.

Where the transport allows it, a connection with nothing to read *parks*: its
reader greenlet ends, and a new one starts when the peer sends something. A
fresh connection parks as soon as it waits; a reading one once it has been idle
for :data:`PARK_AFTER` seconds (the keepalive ticker checks). Thousands of idle
connections then hold no greenlet stacks.
"""

from __future__ import annotations

import codecs
import logging
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import gevent
from gevent import GreenletExit
from gevent.event import AsyncResult
from websockets.frames import Frame, Opcode
from websockets.protocol import SERVER, Protocol, State

from .exceptions import ConnectionClosed, ConnectionTimeout
from .keepalive import keepalive_ticker
from .options import Options

if TYPE_CHECKING:  # pragma: no cover
    import webob

    from .handler import WS
    from .transport import Transport

__all__ = ["WebSocket", "PingWaiter", "live_connections", "encode_frame"]

logger = logging.getLogger("wsmiddleware.connection")

_OPEN = State.OPEN
_CLOSED = State.CLOSED
_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_PING, _PONG, _CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE
_monotonic = time.monotonic
_utf8_decoder = codecs.getincrementaldecoder("utf-8")

#: Every open connection of this process (graceful shutdown, limits, leak checks).
_LIVE: set[WebSocket] = set()

#: Seconds without input after which a waiting reader greenlet is let go.
PARK_AFTER = 1.0

#: From this payload size on, a message goes out as the frame header and the payload
#: itself in one vectored write: serializing would copy the payload two or three
#: times (about 200 µs per MiB, most of what echoing big messages costs the server).
VECTORED_SIZE = 65536
_HEADER_64 = struct.Struct("!BBQ")


def live_connections() -> set[WebSocket]:
    """A snapshot of this process's open WebSocket connections."""
    return set(_LIVE)


def _as_message(message: Any) -> str | bytes | bytearray | memoryview:
    """``message`` as text or binary; ``str`` subclasses (markupsafe.Markup...) are text."""
    if type(message) is str or isinstance(message, (bytes, bytearray, memoryview)):
        return message
    if isinstance(message, str):
        return str(message)
    raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")


def _large_frame_header(opcode: Opcode, length: int) -> bytes:
    """The header websockets' ``Frame.serialize`` writes for a final, unmasked,
    uncompressed data frame of ``length`` >= 65536 bytes: a 64-bit length (RFC 6455 5.2)."""
    return _HEADER_64.pack(0x80 | opcode, 127, length)


def _opcode_and_payload(message: str | bytes | bytearray | memoryview) -> tuple[Opcode, Any]:
    """A checked message (see :func:`_as_message`) as its data frame's opcode and payload."""
    if type(message) is str:
        return _TEXT, message.encode("utf-8")
    return _BINARY, message


def encode_frame(message: str | bytes | bytearray | memoryview) -> bytes:
    """The unmasked, uncompressed server frame of a text (``str``) or binary message.

    Its bytes are the same for every connection without an extension in effect,
    which is what lets a broadcast encode once.
    """
    if type(message) is not str:
        message = _as_message(message)
    return Frame(*_opcode_and_payload(message)).serialize(mask=False)


class PingWaiter:
    """Waitable returned by :meth:`WebSocket.ping`; resolved by the matching pong."""

    __slots__ = ("payload", "sent_at", "timeout", "_result", "_websocket", "_pending")

    def __init__(self, payload: bytes, timeout: float | None, websocket: WebSocket | None = None,
                 pending: dict[bytes, PingWaiter] | None = None) -> None:
        self.payload = payload
        self.sent_at = _monotonic()
        self.timeout = timeout
        self._result: AsyncResult = AsyncResult()
        self._websocket = websocket
        self._pending = pending

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
        websocket = self._websocket
        if websocket is not None and gevent.getcurrent() is websocket._reader and not self._result.ready():
            # The pong can only be read by this very greenlet: waiting here would deadlock.
            raise RuntimeError("cannot wait for a pong inside a callback; wait in websocket.spawn(...) instead")
        try:
            return self._result.get(timeout=timeout)
        except gevent.Timeout:
            # Forget the ping, or a peer that never answers would grow the table.
            if self._pending is not None and self._pending.get(self.payload) is self:
                del self._pending[self.payload]
            raise ConnectionTimeout(f"no pong within {timeout} s") from None

    def _resolve(self) -> None:
        self._result.set(_monotonic() - self.sent_at)

    def _abort(self, exc: BaseException) -> None:
        if not self._result.ready():
            self._result.set_exception(exc)


class WebSocket:
    """One WebSocket connection, as seen by handler callbacks.

    Attributes users read: ``request`` (the handshake's ``webob.Request``),
    ``environ``, ``path``, ``url_vars``, ``subprotocol``, ``remote_addr``,
    ``state`` (a dict for per-connection data), ``close_code`` and
    ``close_reason`` (set once closed), ``dropped`` (messages discarded by the
    ``"drop"`` slow-consumer policy).
    """

    __slots__ = (
        "protocol", "transport", "handler", "options", "_request", "environ", "path",
        "url_vars", "subprotocol", "remote_addr", "state", "dropped",
        "_queue", "_queued", "_writer", "_eof_pending", "_close_timer", "_greenlets",
        "_pings", "_ka_ping", "_reader", "_last_recv", "_parts", "_decoder", "_done",
        "_loop", "_turn", "__weakref__",
    )

    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        handler: WS,
        options: Options,
        *,
        request: webob.Request | None = None,
        environ: dict[str, Any] | None = None,
        url_vars: dict[str, Any] | None = None,
        subprotocol: str | None = None,
    ) -> None:
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
        self._queue: list[bytes | memoryview] = []
        self._queued = 0
        self._writer: gevent.Greenlet | None = None
        self._eof_pending = False
        self._close_timer: gevent.Greenlet | None = None
        self._greenlets: set[gevent.Greenlet] | None = None
        self._pings: OrderedDict[bytes, PingWaiter] | None = None
        self._ka_ping: PingWaiter | None = None
        self._reader: gevent.Greenlet | None = None
        self._last_recv = _monotonic()
        self._parts: list[Any] | None = None
        self._decoder: Any = None
        self._done = False
        # The event loop turn of the last direct send: later sends in the same turn
        # are batched into one write (see _send). libev counts turns; others do not.
        loop = gevent.get_hub().loop
        self._loop = loop if hasattr(loop, "iteration") else None
        self._turn = -1

    @property
    def request(self) -> webob.Request:
        """The handshake request, as a ``webob.Request`` over :attr:`environ`.

        Built on first use: most connections never look at it, and a Request
        keeps its state in the environ, so a fresh one sees what
        ``on_handshake`` saw (and set).
        """
        request = self._request
        if request is None:
            import webob

            request = self._request = webob.Request(self.environ)
        return request

    @request.setter
    def request(self, request: webob.Request | None) -> None:
        self._request = request

    def __repr__(self) -> str:
        return f"<WebSocket {self.path} from {self.remote_addr} {self.protocol.state.name}>"

    # -- state --------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the closing handshake started or the connection ended."""
        return self._done or self.protocol.state is not _OPEN

    @property
    def close_code(self) -> int | None:
        """The close code: the peer's, else ours, else 1006; ``None`` while open."""
        protocol = self.protocol
        if not self._done and protocol.state is _OPEN:
            return None
        if protocol.close_rcvd is not None:
            return protocol.close_rcvd.code
        if protocol.close_sent is not None:
            return protocol.close_sent.code
        return 1006

    @property
    def close_reason(self) -> str | None:
        """The close reason matching :attr:`close_code`; ``None`` while open."""
        protocol = self.protocol
        if not self._done and protocol.state is _OPEN:
            return None
        if protocol.close_rcvd is not None:
            return protocol.close_rcvd.reason
        if protocol.close_sent is not None:
            return protocol.close_sent.reason
        return ""

    # -- sending --------------------------------------------------------------

    def write(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a text (``str``) or binary message; safe from any greenlet.

        Raises :class:`ConnectionClosed` once the connection is closing or closed.
        """
        protocol = self.protocol
        if protocol.state is not _OPEN or self._done:
            raise self._closed_error()
        if type(message) is not str:
            message = _as_message(message)
        if self._queued and self._queued >= self.options.send_queue_limit:
            if self._overflow():
                return
        if protocol.side is SERVER and not (
            protocol.extensions or protocol.writes or protocol.expect_continuation_frame or protocol.debug
        ):
            # A server frame without extensions is exactly what send_text/send_binary
            # would queue: serialize it here and skip the protocol's queue on the hot path.
            opcode, payload = _opcode_and_payload(message)
            if len(payload) >= VECTORED_SIZE:
                self._send(_large_frame_header(opcode, len(payload)), payload)
            else:
                self._send(Frame(opcode, payload).serialize(mask=False))
            return
        if type(message) is str:
            protocol.send_text(message.encode("utf-8"))
        else:
            protocol.send_binary(message)  # type: ignore[arg-type]
        self._flush()

    send = write

    def send_prepared(self, frame: bytes) -> bool:
        """Queue an already-encoded server frame (see :func:`wsmiddleware.broadcast`).

        Only valid when no extension is in effect; returns False if the
        connection is not open or the message was dropped by the slow-consumer policy.
        """
        if self.protocol.state is not _OPEN or self._done:
            return False
        if self._queued and self._queued >= self.options.send_queue_limit:
            if self._overflow():
                return False
        # Only bytes enter the queue whole: a memoryview there marks a partly sent frame.
        self._send(frame if type(frame) is bytes else bytes(frame))
        return True

    def ping(self, payload: bytes | str | None = None) -> PingWaiter:
        """Send a ping; the returned waiter resolves when its pong comes back.

        Without ``payload``, a unique random one is used so that only the
        matching pong resolves the waiter.
        """
        if self.protocol.state is not _OPEN or self._done:
            raise self._closed_error()
        if payload is None:
            payload = os.urandom(4)
            while self._pings is not None and payload in self._pings:
                payload = os.urandom(4)
        elif isinstance(payload, str):
            payload = payload.encode("utf-8")
        else:
            payload = bytes(payload)
        if self._pings is None:
            self._pings = OrderedDict()
        if payload in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        waiter = PingWaiter(payload, self.options.ping_timeout, self, self._pings)
        self._pings[payload] = waiter
        self.protocol.send_ping(payload)
        self._flush()
        return waiter

    def pong(self, payload: bytes | str = b"") -> None:
        """Send a pong (answering a ping, or unsolicited as a heartbeat)."""
        if self.protocol.state is not _OPEN or self._done:
            return
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self.protocol.send_pong(payload)
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; it is bounded by ``close_timeout``.

        Returns at once: ``on_close`` runs when the peer answers or the time runs out.
        """
        # close_sent is set while the read loop lets callbacks answer what arrived
        # before the peer's close (see _dispatch_before_close): one close frame only.
        if self._done or self.protocol.state is not _OPEN or self.protocol.close_sent is not None:
            return
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

    # -- the write path ---------------------------------------------------------

    def _closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or 1006, self.close_reason or "")

    def _overflow(self) -> bool:
        """Apply the slow-consumer policy; True means: drop the message."""
        if self.options.slow_consumer == "drop":
            self.dropped += 1
            return True
        logger.warning("%r: send queue over %d bytes, closing slow consumer", self, self.options.send_queue_limit)
        # Frames still waiting are moot for a reader being closed: dropping them
        # frees the memory now and lets the close frame follow what is already on
        # its way (it gets close_timeout for that). A memoryview at the head is
        # the rest of a frame the socket took in part: it must go out whole.
        queue = self._queue
        keep = 1 if queue and type(queue[0]) is memoryview else 0
        for chunk in queue[keep:]:
            self._queued -= len(chunk)
        del queue[keep:]
        self.close(1008, "send queue overflow: client too slow")
        return True

    def _flush(self) -> None:
        """Send what the protocol produced; an empty chunk means: end the TCP stream."""
        chunks = self.protocol.data_to_send()
        if not chunks:
            return
        if len(chunks) == 1 and chunks[0]:
            self._send(chunks[0])
            return
        data = [chunk for chunk in chunks if chunk]
        if data:
            self._send(data[0] if len(data) == 1 else b"".join(data))
        if len(data) != len(chunks):
            self._eof_pending = True
            if self._writer is None:
                self.transport.shutdown()

    def _send(self, data: bytes | memoryview, payload: bytes | bytearray | memoryview | None = None) -> None:
        """Send a frame, or with ``payload`` a frame header and its payload.

        The two parts go out in one vectored write, without being joined, when
        the socket takes them at once.
        """
        if self.transport.closed:
            return
        if self._writer is None:
            loop = self._loop
            if loop is not None:
                turn = loop.iteration
                if turn == self._turn:
                    # A second send in one turn of the event loop (a burst of
                    # broadcasts, say): queue it, and let the writer send the whole
                    # burst in one call once the current greenlet yields.
                    self._enqueue(data, payload)
                    self._writer = gevent.spawn(self._drain)
                    return
                self._turn = turn
            try:
                if payload is None:
                    sent = self.transport.try_send(data)
                else:
                    sent = self.transport.try_send(data, payload)
            except OSError:
                self._abort()
                return
            if payload is None:
                if sent == len(data):
                    return
                rest = memoryview(data)[sent:]
            else:
                if sent == len(data) + len(payload):
                    return
                # Only an immutable payload may be referenced instead of copied.
                if sent >= len(data) and type(payload) is bytes:
                    rest = memoryview(payload)[sent - len(data):]
                else:
                    rest = memoryview(b"".join((data, payload)))[sent:]
            # The rest of a partly sent frame: a memoryview in the queue.
            self._queue.append(rest)
            self._queued += len(rest)
            self._writer = gevent.spawn(self._drain)
        else:
            self._enqueue(data, payload)

    def _enqueue(self, data: bytes | memoryview, payload: bytes | bytearray | memoryview | None) -> None:
        if payload is not None:
            data = b"".join((data, payload))
        self._queue.append(data)
        self._queued += len(data)

    def _drain(self) -> None:
        """Writer greenlet: send the queue in batches until it is empty."""
        transport = self.transport
        try:
            while self._queue and not transport.closed:
                queue, self._queue = self._queue, []
                data = queue[0] if len(queue) == 1 else b"".join(queue)
                # The batch in flight counts against send_queue_limit until the
                # peer has taken it: a reader that never reads holds one limit's
                # worth of memory, not two.
                transport.sendall(data)
                self._queued -= len(data)
        except OSError:
            self._queue, self._queued = [], 0
            self._abort()
        finally:
            self._writer = None
        if self._eof_pending:
            transport.shutdown()

    def _abort(self) -> None:
        """Drop the TCP connection now; the read loop sees EOF and cleans up."""
        self.transport.shutdown()

    def _start_close_timer(self) -> None:
        if self._close_timer is None and not self._done:
            self._close_timer = gevent.spawn_later(self.options.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if not self._done:
            logger.info("%r: closing handshake timed out after %s s", self, self.options.close_timeout)
            self._abort()

    # -- keepalive and parking -------------------------------------------------------

    def _tick(self, now: float) -> None:
        """Called periodically by the keepalive ticker."""
        options = self.options
        waiter = self._ka_ping
        if waiter is not None:
            if waiter.ready():
                self._ka_ping = None
            elif options.ping_timeout is not None and now - waiter.sent_at >= options.ping_timeout:
                logger.info("%r: no pong within %s s, closing", self, options.ping_timeout)
                self._ka_ping = None
                if self.protocol.state is _OPEN:
                    self.protocol.send_close(1011, "keepalive ping timeout")
                    self._flush()
                # A dead or half-open peer will not answer the close frame.
                self._abort()
                return
        elif options.ping_interval is not None and now - self._last_recv >= options.ping_interval:
            if self.protocol.state is _OPEN and not self._done:
                self._ka_ping = self.ping()
        transport = self.transport
        if transport.parkable and transport.waiting and now - self._last_recv >= PARK_AFTER:
            transport.interrupt()

    # -- the read loop ----------------------------------------------------------

    def run(self) -> None:
        """Serve the connection: open it, then read and dispatch until it ends or parks.

        Returns when the connection has ended, or once it has parked (the
        transport then owns the socket and a later reader greenlet goes on).
        """
        _LIVE.add(self)
        keepalive_ticker.add(self)
        self._serve(True)

    def _serve(self, opening: bool = False) -> None:
        self._reader = gevent.getcurrent()
        parked = False
        try:
            try:
                if opening:
                    self._call(self.handler.on_open)
                parked = self._read_loop(opening)
            except GreenletExit:
                # The server kills connection greenlets when it stops (pywsgi's stop(),
                # gunicorn after its graceful timeout): tell the peer why, and let it
                # answer within close_timeout unless we are killed again.
                if self._done or self.protocol.state is not _OPEN:
                    raise
                self.close(1001, "server shutting down")
                try:
                    self._read_loop(False, park=False)
                except GreenletExit:
                    pass
                raise
        finally:
            self._reader = None
            if not parked:
                keepalive_ticker.discard(self)
                self._finish()

    def _wake(self) -> None:
        """From the hub: a parked connection has input; a new greenlet reads it."""
        self.transport.unpark()
        if self._reader is None:
            self._reader = gevent.spawn(self._serve)

    def _server_stopping(self) -> None:
        """The server this connection parked off is stopping."""
        self.close(1001, "server shutting down")

    def _read_loop(self, fresh: bool, park: bool = True) -> bool:
        """Read and dispatch until the connection ends (False) or parks (True).

        ``fresh``: parks at the first wait (a new connection usually waits).
        """
        protocol = self.protocol
        transport = self.transport
        park_now = fresh and park and transport.parkable
        while True:
            try:
                data = transport.recv(park_now)
            except OSError:
                data = b""
            park_now = False
            if data is None:
                # Parked only with no write in flight: the writer's socket is
                # replaced by the first park.
                if (
                    park and not self._done and self._writer is None and protocol.state is _OPEN
                    and transport.park(self._wake, self._server_stopping, self.options.close_timeout)
                ):
                    return True
                continue
            was_open = protocol.state is _OPEN
            if data:
                self._last_recv = _monotonic()
                protocol.receive_data(data)  # type: ignore[arg-type]  # a memoryview is copied in
            else:
                protocol.receive_eof()
            events = cast("list[Frame]", protocol.events_received())
            if data and was_open and events and protocol.state is not _OPEN:
                self._dispatch_before_close(events)
            else:
                self._flush()
                for event in events:
                    self._dispatch(event)
            if not data or protocol.state is _CLOSED:
                return False
            if protocol.state is not _OPEN:
                self._start_close_timer()

    def _dispatch_before_close(self, events: list[Frame]) -> None:
        """Dispatch frames that arrived in the same read as the end of the connection.

        The peer's close frame (or a frame that fails the connection) was parsed
        together with earlier messages, and the protocol has already queued its
        close frame. Those earlier messages came first: their callbacks run as if
        they had arrived alone, with the connection still open, and what they
        write goes out before the close frame.
        """
        protocol = self.protocol
        held = protocol.data_to_send()
        closing = protocol.state
        protocol.state = _OPEN
        try:
            for event in events:
                self._dispatch(event)
                if protocol.state is not _OPEN:
                    # The callback side failed the connection itself (invalid UTF-8)
                    # and sent that close frame; only the end of stream remains.
                    held = [chunk for chunk in held if not chunk]
                    break
        finally:
            if protocol.state is _OPEN:
                protocol.state = closing
        protocol.writes.extend(held)
        self._flush()

    def _finish(self) -> None:
        self._done = True
        _LIVE.discard(self)
        if self._close_timer is not None:
            self._close_timer.kill(block=False)
            self._close_timer = None
        if self._greenlets:
            gevent.killall(list(self._greenlets), block=False)
        if self._writer is not None and not self._writer.dead:
            # Give queued bytes (such as a close frame) the closing time to drain.
            self._writer.join(timeout=self.options.close_timeout)
            self._writer.kill(block=False)
        self.transport.shutdown()
        self.transport.close()
        if self._pings:
            error = self._closed_error()
            for waiter in self._pings.values():
                waiter._abort(error)
            self._pings = None
        self._parts = self._decoder = None
        self._call(self.handler.on_close)

    def _call(self, callback: Callable[..., Any], *args: Any) -> bool:
        try:
            callback(self, *args)
            return True
        except ConnectionClosed:
            return True
        except Exception:
            logger.exception("%s.%s raised; closing %r with 1011", type(self.handler).__name__, callback.__name__, self)
            self.close(1011, "internal error")
            return False

    def _dispatch(self, frame: Frame) -> None:
        opcode = frame.opcode
        handler = self.handler
        if opcode is _PING:
            if self.protocol.state is _OPEN:
                self._call(handler.on_ping, bytes(frame.data))
            return
        if opcode is _PONG:
            payload = bytes(frame.data)
            self._pong_received(payload)
            self._call(handler.on_pong, payload)
            return
        if opcode is _CLOSE or self.protocol.state is not _OPEN:
            return
        data = frame.data
        if opcode is _TEXT:
            if frame.fin:
                try:
                    text = data.decode("utf-8") if type(data) is bytes else bytes(data).decode("utf-8")
                except UnicodeDecodeError as exc:
                    self._invalid_utf8(exc)
                    return
                self._call(handler.on_message, text)
                return
            self._decoder = _utf8_decoder()
            self._parts = []
            self._append_text(data, False)
            return
        if opcode is _BINARY:
            if frame.fin:
                self._call(handler.on_bytes, data if type(data) is bytes else bytes(data))
                return
            self._decoder = None
            self._parts = [bytes(data)]
            return
        # Continuation: the protocol has already checked that a message is in progress.
        if self._parts is None:
            return
        if self._decoder is not None:
            if not self._append_text(data, frame.fin):
                return
            if frame.fin:
                text = "".join(self._parts)
                self._parts = self._decoder = None
                self._call(handler.on_message, text)
            return
        self._parts.append(bytes(data))
        if frame.fin:
            payload = b"".join(self._parts)
            self._parts = None
            self._call(handler.on_bytes, payload)

    def _append_text(self, data: Any, final: bool) -> bool:
        # Decoding each fragment as it arrives rejects invalid UTF-8 before the
        # message completes (the "fail fast" the Autobahn cases check).
        try:
            self._parts.append(self._decoder.decode(data, final))  # type: ignore[union-attr]
            return True
        except UnicodeDecodeError as exc:
            self._invalid_utf8(exc)
            return False

    def _invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        self._parts = self._decoder = None
        self.protocol.fail(1007, f"invalid UTF-8: {exc.reason}")
        self._flush()
        self._start_close_timer()

    def _pong_received(self, payload: bytes) -> None:
        pings = self._pings
        if not pings or payload not in pings:
            return
        # A pong acknowledges its ping and every ping sent before it.
        while pings:
            key, waiter = pings.popitem(last=False)
            waiter._resolve()
            if key == payload:
                break
