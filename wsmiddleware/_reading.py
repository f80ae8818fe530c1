"""The read side of :class:`~wsmiddleware.connection.WebSocket`: read loop, dispatch,
parking, deadlines and the end of a connection (a mixin; state lives in the facade)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent import GreenletExit
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State

from ._messages import Assembler, InvalidText, whole
from ._slicing import cut
from .exceptions import ConnectionClosed
from .transport._pool import PoolTie

__all__ = ["ReadLoop", "PARK_AFTER"]

logger = logging.getLogger("wsmiddleware.connection")

_OPEN, _CLOSED = State.OPEN, State.CLOSED
_PING, _PONG, _CLOSE = Opcode.PING, Opcode.PONG, Opcode.CLOSE
_monotonic = time.monotonic

#: Seconds without input after which a waiting reader greenlet is let go.
PARK_AFTER = 1.0
#: Frames one feed to the parser may start (see _slicing): at most about 0.4 ms of parsing.
MAX_FRAMES = 64
#: Longest a connection keeps the hub before letting the loop serve others.
MAX_HOLD = 0.002
#: A positive sleep: the loop polls for I/O before this greenlet goes on.
YIELD_S = 1e-6


class ReadLoop:
    # The state the read side shares with the facade (which sets it up).
    __slots__ = (
        "protocol", "transport", "handler", "options", "_open", "_done", "_close_rcvd", "_close_sent",
        "_close_timer", "_greenlets", "_ka_ping", "_reader", "_last_recv", "_registry", "_tie", "_writer",
        "_assembler", "_pings", "_ticker", "_integration", "_skip", "_head",
    )

    protocol: Any
    transport: Any
    handler: Any
    options: Any
    _open: bool
    _done: bool
    _close_rcvd: tuple[int, str] | None
    _close_sent: tuple[int, str] | None
    _close_timer: Any
    _greenlets: Any
    _ka_ping: Any
    _reader: Any
    _last_recv: float
    _registry: Any
    _tie: Any
    _writer: Any
    _assembler: Any
    _pings: Any
    _ticker: Any
    _integration: Any
    #: Where the incoming stream is, for cutting reads at frame starts (see _slicing).
    _skip: int
    _head: bytes

    if TYPE_CHECKING:  # the facade's write side, which the read side drives
        def close(self, code: int = 1000, reason: str = "") -> None: ...
        def ping(self, payload: bytes | str | None = None) -> Any: ...
        def _flush(self) -> None: ...
        def _send_chunks(self, chunks: list[bytes]) -> None: ...
        def _start_close_timer(self) -> None: ...
        def _abort(self) -> None: ...
        def _slow_consumer(self) -> None: ...
        def _closed_error(self) -> ConnectionClosed: ...

    def run(self) -> None:
        """Serve the connection: open it, then read and dispatch until it ends or parks.

        Returns when the connection has ended, or once it has parked (the
        transport then keeps the socket and a later reader greenlet goes on).
        """
        self._reschedule()
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
                # The server kills connection greenlets when it stops: tell the peer
                # why, and let it answer within close_timeout unless killed again.
                if self._done or not self._open:
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
                self._finish()

    def _wake(self) -> None:
        """From the hub: a parked connection has input (or was aborted); read it."""
        self.transport.unpark()
        if self._reader is None and not self._done:
            self._reader = gevent.spawn(self._serve)

    def _server_stopping(self) -> None:
        """The server this connection parked off is stopping."""
        self.close(1001, "server shutting down")

    def _read_loop(self, fresh: bool, park: bool = True) -> bool:
        """Read and dispatch until the connection ends (False) or parks (True).

        ``fresh``: park at the first wait (a new connection usually waits).
        """
        transport = self.transport
        protocol = self.protocol
        while True:
            data = transport.recv()
            if data is None:
                if park and fresh and self._park():
                    return True
                fresh = False
                if transport.parkable and park:
                    self._ticker.schedule(self, self._last_recv + PARK_AFTER)
                if not transport.wait_readable() and not transport.closed and park and self._park():
                    return True
                continue
            if data:
                self._last_recv = _monotonic()
                self._receive(data)
            else:
                protocol.receive_eof()
                self._process_events()
            if not data or protocol.state is _CLOSED:
                return False

    def _park(self) -> bool:
        transport = self.transport
        if not transport.parkable or transport.closed or not self._open:
            return False
        if self._tie is None and transport.pool is not None:
            tie = PoolTie.of(transport.pool)
            if tie is None:  # the pool is full: keep the connection in its request
                logger.info("%r: the server's pool is full, the connection stays in its request", self)
                transport.parkable = False
                return False
            tie.add(self, self._server_stopping, self.options.close_timeout)
            self._tie = tie
        transport.park(self._wake)
        return True

    def _receive(self, data: Any) -> None:
        protocol = self.protocol
        n = len(data)
        skip = self._skip
        if skip >= n:
            # Inside a big frame's payload: the whole read at once.
            self._skip = skip - n
            protocol.receive_data(data)
            self._process_events()
            return
        if not skip and 1 < n <= 131 and (data[1] == n + 122 or data[1] == n - 2) and not self._head:
            # Exactly one small frame (masked: a client's; unmasked: a server's).
            protocol.receive_data(data)
            self._process_events()
            return
        # Cut at frame starts, and if the feeds keep the hub too long, let the loop
        # serve others in between (a flood of tiny frames must not stall them).
        start = _monotonic()
        pos = 0
        while pos < n:
            end, self._skip, self._head = cut(data, pos, self._skip, self._head, MAX_FRAMES)
            protocol.receive_data(data[pos:end])
            pos = end
            self._process_events()
            if pos < n and _monotonic() - start > MAX_HOLD:
                # The read buffer is shared by this hub's connections: keep the rest.
                data, pos, n = bytes(data[pos:]), 0, n - pos
                gevent.sleep(YIELD_S)
                start = _monotonic()

    def _process_events(self) -> int:
        protocol = self.protocol
        events = protocol.events_received()
        if not events and protocol.state is _OPEN:
            # Part of a frame: nothing to answer, dispatch or count (a big message
            # arrives as many reads and slices).
            return 0
        closing = self._open and protocol.state is not _OPEN
        if not closing:
            if not self._open:
                self._flush()  # the rest of our closing handshake
            # Open, the protocol only writes for pings: their dispatch sends the pongs.
            for frame in events:
                self._dispatch(frame)
            if protocol.state is not _OPEN and self._open:
                self._open = False
                self._start_close_timer()
        else:
            # The peer's close (or a frame failing the connection) came with earlier
            # messages. Those came first: their callbacks run with the connection
            # still open, and what they write goes out before the protocol's close.
            held = protocol.data_to_send()
            for frame in events:
                self._dispatch(frame)
            self._open = False
            self._send_chunks(held)
            self._start_close_timer()
        if self._writer.owed() > self.options.send_queue_limit and not self._done:
            # Pongs and close frames are owed, never dropped: a peer that makes us
            # owe more than the limit without reading is a slow consumer.
            if self._open:
                self._slow_consumer()
            elif self._writer.queued > self.options.send_queue_limit:
                self._abort()
        return len(events)

    def _dispatch(self, frame: Frame) -> None:
        opcode = frame.opcode
        handler = self.handler
        if opcode is _PING:
            # All the pongs of this read at the first ping; nothing for the next ones.
            self._flush()
            if self._open:
                self._call(handler.on_ping, bytes(frame.data))
            return
        if opcode is _PONG:
            payload = bytes(frame.data)
            self._pings.pong(payload)
            self._call(handler.on_pong, payload)
            return
        if opcode is _CLOSE:
            try:
                close = Close.parse(frame.data)
            except Exception:  # the protocol has failed the connection for it already
                close = None
            if close is not None:
                self._close_rcvd = (int(close.code), close.reason)
            if self._assembler is not None:
                self._assembler.reset()
            return
        if not self._open:
            return
        try:
            assembler = self._assembler
            if assembler is None:
                if frame.fin:
                    message = whole(frame)
                else:
                    assembler = self._assembler = Assembler()
                    message = assembler.feed(frame)
            else:
                message = assembler.feed(frame)
        except InvalidText as exc:
            if self.protocol.state is _OPEN:
                self.protocol.fail(1007, str(exc))
                self._flush()
            self._open = False
            self._start_close_timer()
            return
        if message is None:
            return
        if type(message) is str:
            self._call(handler.on_message, message)
        else:
            self._call(handler.on_bytes, message)

    def _call(self, callback: Callable[..., Any], *args: Any) -> bool:
        try:
            integration = self._integration
            if integration is None:
                callback(self, *args)
            else:
                integration.callback(self, callback, *args)
            return True
        except ConnectionClosed:
            return True
        except Exception:
            logger.exception("%s.%s raised; closing %r with 1011", type(self.handler).__name__,
                             getattr(callback, "__name__", "callback"), self)
            self.close(1011, "internal error")
            return False

    # -- deadlines ------------------------------------------------------------------------

    def on_deadline(self, now: float) -> float | None:
        """Called by the ticker when a deadline of this connection may be due."""
        if self._done:
            return None
        options = self.options
        waiter = self._ka_ping
        if waiter is not None:
            if waiter.ready():
                self._ka_ping = None
            elif options.ping_timeout is not None and now - waiter.sent_at >= options.ping_timeout:
                logger.info("%r: no pong within %s s, closing", self, options.ping_timeout)
                self._ka_ping = None
                self.close(1011, "keepalive ping timeout")
                # A dead or half-open peer will not answer the close frame.
                self._abort()
                return None
        elif options.ping_interval is not None and self._open and now - self._last_recv >= options.ping_interval:
            self._ka_ping = self.ping()
        transport = self.transport
        if transport.waiting and transport.parkable and now - self._last_recv >= PARK_AFTER:
            transport.interrupt()
        return self._next_deadline()

    def _next_deadline(self) -> float | None:
        options = self.options
        due: list[float] = []
        waiter = self._ka_ping
        if waiter is not None and options.ping_timeout is not None:
            due.append(waiter.sent_at + options.ping_timeout)
        elif options.ping_interval is not None and self._open:
            due.append(self._last_recv + options.ping_interval)
        if self.transport.waiting and self.transport.parkable:
            due.append(self._last_recv + PARK_AFTER)
        return min(due) if due else None

    def _reschedule(self) -> None:
        when = self._next_deadline()
        if when is not None:
            self._ticker.schedule(self, when)

    # -- the end ------------------------------------------------------------------------

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._open = False
        if self._registry is not None:
            self._registry.discard(self)
        self._ticker.discard(self)
        timer, self._close_timer = self._close_timer, None
        if timer is not None:
            timer.kill(block=False)
        if self._greenlets:
            gevent.killall(list(self._greenlets), block=False)
        writer = self._writer
        if writer.greenlet is not None:
            # Give queued bytes (such as a close frame) the closing time to drain.
            writer.join(self.options.close_timeout)
        writer.stop()
        protocol = self.protocol
        if protocol.state is not _CLOSED:
            try:
                protocol.receive_eof()
            except EOFError:  # it had seen the end already
                pass
        # After a completed closing handshake TCP ends gracefully; any other end is an abort.
        clean = self._close_rcvd is not None
        if clean and not self.transport.closed:
            self.transport.close()
        else:
            self.transport.abort()
        tie, self._tie = self._tie, None
        if tie is not None:
            tie.discard(self)
        self._pings.abort_all(self._closed_error())
        if self._assembler is not None:
            self._assembler.reset()
        self._call(self.handler.on_close)
