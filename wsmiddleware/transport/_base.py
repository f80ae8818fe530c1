"""The socket of an upgraded connection, watched with watchers of our own.

Every server adapter ends with a :class:`Transport`: a non-blocking socket and
two ``hub.loop.io`` watchers on its file descriptor. Reads and writes are plain
non-blocking calls; waiting uses gevent's documented pattern (a ``Waiter``
switched by the watcher), so that another greenlet can end a wait (to park an
idle reader, or to abort), and so that no watcher of the server's socket
object ever carries a callback of ours: gevent cancels waits on its own
watchers when that object is closed, and expects a greenlet behind them.

A transport that *owns* its socket (the server let go of it) can *park*: the
read watcher calls a plain function from the hub when bytes arrive, and no
greenlet waits meanwhile.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import termios
import weakref
from collections.abc import Callable
from typing import Any

import gevent
from gevent.hub import Waiter

__all__ = ["Transport", "READ_BUFFER_SIZE", "RECV_SIZE"]

logger = logging.getLogger("wsmiddleware.transport")

RECV_SIZE = 65536
#: Bytes one read may take from the kernel; big reads mean fewer calls for big messages.
READ_BUFFER_SIZE = 1048576

_READ, _WRITE = 1, 2
#: What a wait returns when another greenlet ended it (see interrupt / abort).
_INTERRUPTED = object()
_LINGER_RESET = struct.pack("ii", 1, 0)
_OUTQ = getattr(termios, "TIOCOUTQ", None)

#: One read buffer per hub (thread), shared by its connections: an idle
#: connection then holds no read buffer at all.
_read_buffers: weakref.WeakKeyDictionary[Any, memoryview] = weakref.WeakKeyDictionary()


def _read_buffer(hub: Any) -> memoryview:
    buffer = _read_buffers.get(hub)
    if buffer is None:
        buffer = _read_buffers[hub] = memoryview(bytearray(READ_BUFFER_SIZE))
    return buffer


class Transport:
    """Byte-level access to an upgraded connection's socket.

    ``sock`` must be a non-blocking socket (a standard-library socket, or a
    gevent socket with timeout 0) whose file descriptor stays open for as long
    as the transport is in use. ``pending`` holds bytes the server read past
    the request head. ``owned``: the transport closes the socket at the end
    (else the server does, after the WSGI call returns). ``parkable``: the WSGI
    call may return while the connection lives on (the adapter decides).
    """

    __slots__ = (
        "sock", "fd", "hub", "remote_addr", "origin", "owned", "parkable", "closed", "eof_sent",
        "pool", "_pending", "_buffer", "_read_io", "_write_io", "_waiter", "_wwaiter", "_parked",
    )

    def __init__(self, sock: Any, *, pending: bytes = b"", remote_addr: str | None = None,
                 owned: bool = False, parkable: bool = False, origin: Any = None) -> None:
        self.sock = sock
        self.fd: int = sock.fileno()
        self.hub = gevent.get_hub()
        self.remote_addr = remote_addr
        #: The server the connection came through (graceful stop closes its own).
        self.origin = origin
        self.owned = owned
        #: The server's ``gevent.pool.Pool``, where parked connections keep a stand-in.
        self.pool: Any = None
        self.parkable = parkable
        self.closed = False
        self.eof_sent = False
        self._pending = pending
        self._buffer = _read_buffer(self.hub)
        self._read_io: Any = self._make_read_watcher()
        self._write_io: Any = None
        self._waiter: Waiter | None = None
        self._wwaiter: Waiter | None = None
        self._parked = False
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            # Sends are batched per turn of the event loop already (see _writer);
            # Nagle's algorithm would only hold small messages back.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def _make_read_watcher(self) -> Any:
        return self.hub.loop.io(self.fd, _READ)

    # -- reading ------------------------------------------------------------------

    def recv(self) -> bytes | memoryview | None:
        """Bytes the peer sent, ``b""`` at end of stream, ``None`` if none yet.

        A memoryview result is a view of a buffer shared by the connections of
        this hub: consume it before the next ``recv`` of any of them.
        """
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self.closed:
            return b""
        buffer = self._buffer
        try:
            n = self.sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""
        return buffer[:n]

    def wait_readable(self) -> bool:
        """Block this greenlet until the socket is readable; False if interrupted."""
        if self.closed:
            return True
        waiter = self._waiter = Waiter(self.hub)
        io = self._read_io
        io.start(waiter.switch, waiter)
        try:
            return waiter.get() is waiter
        finally:
            io.stop()
            self._waiter = None

    @property
    def waiting(self) -> bool:
        """Whether a greenlet is blocked in :meth:`wait_readable`."""
        return self._waiter is not None

    def interrupt(self) -> None:
        """End a :meth:`wait_readable` in progress (it returns False)."""
        waiter = self._waiter
        if waiter is not None:
            # Waiters are switched from the hub; if data wins the race, the
            # reader has moved on and this lands in a waiter nobody reads.
            self.hub.loop.run_callback(waiter.switch, _INTERRUPTED)

    def park(self, wake: Callable[[], Any]) -> None:
        """Call ``wake()`` from the hub once the peer sends something (or hangs up).

        ``wake`` must call :meth:`unpark` first: the watcher holds it alone, with no
        wrapper of ours, as what every idle connection keeps is counted in bytes."""
        self._parked = True
        self._read_io.start(wake)

    def unpark(self) -> None:
        if self._parked:
            self._parked = False
            self._read_io.stop()

    @property
    def parked(self) -> bool:
        return self._parked

    # -- writing ------------------------------------------------------------------

    def try_send(self, *parts: bytes | bytearray | memoryview) -> int:
        """Write what the kernel takes now, in order, in one call; return how many bytes."""
        if self.closed:
            raise BrokenPipeError("transport closed")
        try:
            return self.sock.send(parts[0]) if len(parts) == 1 else self.sock.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            return 0

    def sendall(self, data: bytes | memoryview) -> None:
        """Write everything, waiting cooperatively while the peer does not read."""
        view = memoryview(data)
        while view:
            sent = self.try_send(view)
            if sent:
                view = view[sent:]
                continue
            self._wait_writable()

    def _wait_writable(self) -> None:
        io = self._write_io
        if io is None:
            io = self._write_io = self.hub.loop.io(self.fd, _WRITE)
        waiter = self._wwaiter = Waiter(self.hub)
        io.start(waiter.switch, waiter)
        try:
            if waiter.get() is not waiter:
                raise BrokenPipeError("transport aborted")
        finally:
            io.stop()
            self._wwaiter = None

    def unsent(self) -> int:
        """Bytes the kernel still holds for the peer (0 where the OS cannot tell)."""
        if _OUTQ is None or self.closed:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(self.fd, _OUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return 0

    # -- ending ---------------------------------------------------------------------

    def send_eof(self) -> None:
        """End our direction of the TCP stream (after the closing handshake)."""
        if self.closed or self.eof_sent:
            return
        self.eof_sent = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def abort(self) -> None:
        """Drop the connection now: an RST, not a FIN, so the kernel frees what it
        still held for the peer at once instead of lingering in FIN-WAIT-1."""
        if self.closed:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        """Stop watching and end the connection; idempotent.

        An owned socket is closed here; otherwise it is shut down, and the
        server closes it once the WSGI call returns.
        """
        if self.closed:
            return
        self.closed = True
        self._pending = b""
        self._parked = False
        # Stopped before the descriptor closes: a started watcher on a closed
        # descriptor is an error for the loop. A greenlet blocked on one is woken.
        self._stop_watchers()
        for waiter in (self._waiter, self._wwaiter):
            if waiter is not None:
                self.hub.loop.run_callback(waiter.switch, _INTERRUPTED)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.owned:
            try:
                self.sock.close()
            except OSError:
                pass

    def release(self) -> None:
        """Stop watching; the socket is the server's from now on (it closes it)."""
        self._stop_watchers()

    def _stop_watchers(self) -> None:
        if self._read_io is not None:
            self._read_io.stop()
        if self._write_io is not None:
            self._write_io.stop()


class TLSTransport(Transport):
    """A transport over a gevent ``SSLSocket``, through its own cooperative calls.

    TLS keeps decrypted bytes in user space, so readiness of the descriptor
    says nothing: reads block cooperatively inside the SSL socket, nothing is
    written without waiting (the writer greenlet sends everything), and the
    connection never parks.
    """

    __slots__ = ()

    def __init__(self, sock: Any, **kwargs: Any) -> None:
        kwargs["parkable"] = False
        super().__init__(sock, **kwargs)

    def _make_read_watcher(self) -> Any:
        return None

    def recv(self) -> bytes | memoryview | None:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self.closed:
            return b""
        try:
            n = self.sock.recv_into(self._buffer, RECV_SIZE)
        except OSError:
            return b""
        return self._buffer[:n]

    def wait_readable(self) -> bool:  # recv never returns None
        return True

    def park(self, wake: Callable[[], Any]) -> None:
        raise RuntimeError("a TLS connection cannot park")

    def try_send(self, *parts: bytes | bytearray | memoryview) -> int:
        if self.closed:
            raise BrokenPipeError("transport closed")
        return 0

    def sendall(self, data: bytes | memoryview) -> None:
        if self.closed:
            raise BrokenPipeError("transport closed")
        self.sock.sendall(data)
