"""Taking the socket over from the WSGI server once the handshake is accepted.

Each gevent server hands its connection over differently (see DESIGN.md):

* ``gevent.pywsgi`` (and gunicorn's ``gevent_pywsgi`` worker): ``wsgi.input`` is the
  raw buffered reader of the socket; a 101 sent through ``start_response`` is not
  chunked. The connection must live inside the WSGI call.
* gunicorn's ``gevent`` worker: the socket is ``environ["gunicorn.socket"]``; we
  write the 101 ourselves and tell the worker the request was already handled.
* gevent-websocket's handler: it has already answered 101 and put its own object
  in ``environ["wsgi.websocket"]``; we take its socket and reader.

A :class:`Transport` then offers the few byte-level operations the connection needs,
and, on pywsgi and gunicorn's gevent worker, lets an idle connection *park*: the
socket is detached from the server (which then finishes the request as if the
connection had ended) and no greenlet waits on it until the peer sends something.
An idle connection then costs its socket and a few objects, not a greenlet's
stack. A stand-in greenlet in the server's pool keeps ``stop()`` able to reach
parked connections (see :class:`_PoolTie`).
"""

from __future__ import annotations

import io
import logging
import socket
import weakref
from collections.abc import Callable
from typing import Any

import gevent
import gevent.pywsgi as _pywsgi
import gevent.socket
import gevent.ssl
from gevent.event import Event
from gevent.exceptions import InvalidSwitchError
from gevent.hub import Waiter
from gevent.pool import PoolFull

__all__ = ["Transport", "TransportUnavailable", "detect", "SUPPORTED_SERVERS"]

logger = logging.getLogger("wsmiddleware.transport")

SUPPORTED_SERVERS = (
    "gevent.pywsgi.WSGIServer, gunicorn -k gevent, gunicorn -k gevent_pywsgi, "
    "gevent-websocket's WebSocketHandler / GeventWebSocketWorker"
)

RECV_SIZE = 65536
#: Bytes one read may take from the kernel; big reads mean fewer calls for big messages.
READ_BUFFER_SIZE = 1048576

#: One read buffer per gevent hub (thread), shared by its connections; see Transport.recv.
_read_buffers: weakref.WeakKeyDictionary[Any, memoryview] = weakref.WeakKeyDictionary()


def _read_buffer() -> memoryview:
    hub = gevent.get_hub()
    buffer = _read_buffers.get(hub)
    if buffer is None:
        buffer = _read_buffers[hub] = memoryview(bytearray(READ_BUFFER_SIZE))
    return buffer

try:  # gunicorn's async workers skip writing a response for this sentinel.
    from gunicorn.workers.base_async import ALREADY_HANDLED as _GUNICORN_HANDLED
except Exception:  # pragma: no cover - gunicorn is an optional extra
    _GUNICORN_HANDLED = None


class TransportUnavailable(Exception):
    """The WSGI server cannot hand its socket over; the reason names the server."""


class Transport:
    """Byte-level access to an upgraded connection.

    ``reader`` (a buffered reader of the socket, as pywsgi keeps one) is read first
    so that no byte the server buffered is lost; ``pending`` holds bytes the server
    read past the request head (gunicorn's parser).
    """

    __slots__ = (
        "sock", "_raw", "_read", "_raw_recv_into", "_drained", "_buffer", "_pending", "_finish",
        "remote_addr", "closed", "parkable", "detached", "_waiter", "_release", "_pool", "_tie",
    )

    def __init__(
        self,
        sock: Any,
        *,
        reader: io.BufferedReader | None = None,
        pending: bytes = b"",
        finish: Callable[[Transport], Any] | None = None,
        remote_addr: str | None = None,
        release: Callable[[], Any] | None = None,
        pool: Any = None,
    ) -> None:
        self.sock = sock
        # gevent sockets wrap a non-blocking OS socket: writing to it directly lets
        # a writer learn at once whether the kernel buffer is full, without waiting.
        # Not under TLS: the OS socket below an SSLSocket would get clear text.
        raw = getattr(sock, "_sock", None)
        plain = isinstance(sock, gevent.socket.socket) and not isinstance(sock, gevent.ssl.SSLSocket)
        self._raw = raw if plain else None
        self._read = None
        if reader is not None:
            buffered, drained = _take_buffered(reader, sock)
            pending = pending + buffered
            if not drained:
                self._read = reader.read1
        # Reading into a buffer shared per thread instead of letting each waiting
        # read allocate its own: an idle connection then holds no read buffer at all.
        self._buffer = _read_buffer()
        # With the OS socket and gevent's read watcher at hand, recv waits for data
        # before asking for it once a read has emptied the socket (see recv).
        raw_sock = self._raw
        waitable = raw_sock is not None and hasattr(sock, "_wait") and hasattr(sock, "_read_event")
        self._raw_recv_into = raw_sock.recv_into if waitable and raw_sock is not None else None
        self._drained = False
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
            # Writes are already batched per turn of the event loop (see
            # WebSocket._send); Nagle's algorithm would only hold messages back.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._pending = pending
        self._finish = finish
        self.remote_addr = remote_addr
        self.closed = False
        # Parking needs a socket the server can let go of (``release`` tells it to)
        # and nothing left in the server's reader.
        self.parkable = release is not None and self._raw_recv_into is not None and self._read is None
        self.detached = False
        self._waiter: Waiter | None = None
        self._release = release
        self._pool = pool
        self._tie: _PoolTie | None = None

    def recv(self, park: bool = False) -> bytes | memoryview | None:
        """The next bytes from the peer; empty at end of stream.

        The result may be a view of a buffer that the next ``recv`` of any
        connection of this thread overwrites: consume it before doing I/O.
        ``None`` means: go park instead of waiting; given when ``park`` is true
        and there is nothing to read yet, or when :meth:`interrupt` ended a wait.
        """
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self._read is not None:
            return self._read(RECV_SIZE)
        buffer = self._buffer
        recv_into = self._raw_recv_into
        if recv_into is None:
            return buffer[: self.sock.recv_into(buffer)]
        sock = self.sock
        while True:
            if self._drained:
                # The last read emptied the socket, so asking again now would mostly
                # fail (and raise): wait for the peer first, as gevent would after failing.
                event = sock._read_event
                if event is None:  # closed by another greenlet
                    return b""
                if park:
                    return None
                if sock.timeout is None and event.callback is None:
                    # What sock._wait comes to without a timeout (hub.wait), spelled
                    # out, so that interrupt() can end it.
                    waiter = self._waiter = Waiter(sock.hub)
                    event.start(waiter.switch, waiter)
                    try:
                        woken = waiter.get()
                    finally:
                        event.stop()
                        self._waiter = None
                    if woken is _INTERRUPT:
                        return None
                    if woken is not waiter:
                        raise InvalidSwitchError(f"invalid switch into {gevent.getcurrent()!r} waiting on {event!r}")
                else:
                    sock._wait(event)
            try:
                n = recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                self._drained = True
                continue
            self._drained = n < READ_BUFFER_SIZE
            return buffer[:n]

    @property
    def waiting(self) -> bool:
        """Whether a greenlet is blocked in :meth:`recv`, waiting for the peer."""
        return self._waiter is not None

    def interrupt(self) -> None:
        """Make a :meth:`recv` waiting right now return ``None`` (go park)."""
        waiter = self._waiter
        if waiter is not None:
            # From the hub, as gevent's waiters require; if data wins the race,
            # this lands in a waiter nobody reads any more.
            self.sock.hub.loop.run_callback(waiter.switch, _INTERRUPT)

    def park(self, wake: Callable[[], Any], server_stop: Callable[[], Any], close_timeout: float) -> bool:
        """Call ``wake()`` from the hub once the peer sends something; False if impossible.

        The first park takes the socket from the server: ``server_stop()`` is
        then called if the server stops (its pool kills our stand-in greenlet).
        ``wake`` must call :meth:`unpark`.
        """
        if not self.parkable or self.closed:
            return False
        if not self.detached and not self._detach(server_stop, close_timeout):
            self.parkable = False
            return False
        event = self.sock._read_event
        if event is None:
            return False
        event.start(wake)
        return True

    def unpark(self) -> None:
        """Stop watching a parked socket; the next recv reads at once."""
        self._drained = False
        event = self.sock._read_event
        if event is not None:
            event.stop()

    def _detach(self, server_stop: Callable[[], Any], close_timeout: float) -> bool:
        """Own the socket from now on; the server finishes its request without it."""
        if self._pool is not None:
            tie = _PoolTie.of(self._pool)
            if tie is None:  # the pool is full: keep the connection in the request
                return False
            tie.add(self, server_stop, close_timeout)
            self._tie = tie
        old = self.sock
        fd = old.detach()
        # The server's socket object is now a closed proxy that it may close
        # again harmlessly; this one is the connection's.
        self.sock = sock = gevent.socket.socket(old.family, old.type, old.proto, fileno=fd)
        self._raw = sock._sock
        self._raw_recv_into = sock._sock.recv_into
        self.detached = True
        release, self._release = self._release, None
        if release is not None:
            release()
        return True

    def close(self) -> None:
        """Close a socket the server let go of (others are the server's to close)."""
        if self._tie is not None:
            self._tie.discard(self)
            self._tie = None
        if self.detached:
            self.closed = True
            self.sock.close()

    def try_send(self, *parts: bytes | bytearray | memoryview) -> int:
        """Write what the kernel takes now without waiting; return how many bytes.

        Several ``parts`` go out in order in one vectored write.
        """
        if self._raw is None:
            return 0
        try:
            return self._raw.send(parts[0]) if len(parts) == 1 else self._raw.sendmsg(parts)
        except (BlockingIOError, InterruptedError):
            return 0

    def sendall(self, data: bytes | memoryview) -> None:
        """Write everything, waiting cooperatively for the peer to read."""
        self.sock.sendall(data)

    def shutdown(self) -> None:
        """End the TCP connection in both directions; the server closes the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def finish(self) -> Any:
        """The WSGI return value that tells the server the connection is done (or parked)."""
        if not self.detached:
            self.shutdown()
        if self._finish is not None:
            return self._finish(self)
        return []


_INTERRUPT = object()


class _PoolTie:
    """A greenlet in a server's pool standing in for the connections parked off it.

    gevent servers with a pool (pywsgi's WSGIServer, gunicorn's gevent_pywsgi
    worker) stop by waiting for their pool and then killing what is left. A
    parked connection has no greenlet there: this one is killed instead, and
    closes them (``server_stop``), waiting up to their close timeout. It takes a
    single slot of the pool for all of them, and ends with the last one.
    """

    _ties: weakref.WeakKeyDictionary[Any, _PoolTie] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, pool: Any) -> _PoolTie | None:
        tie = cls._ties.get(pool)
        if tie is None:
            tie = cls(pool)
            try:
                pool.add(tie.greenlet, blocking=False)
            except PoolFull:
                return None
            cls._ties[pool] = tie
            tie.greenlet.start()
        return tie

    def __init__(self, pool: Any) -> None:
        self.members: dict[Transport, Callable[[], Any]] = {}
        self.close_timeout = 0.0
        self.empty = Event()
        self.greenlet = gevent.Greenlet(self._run, pool)

    def add(self, transport: Transport, server_stop: Callable[[], Any], close_timeout: float) -> None:
        self.members[transport] = server_stop
        self.close_timeout = max(self.close_timeout, close_timeout)
        self.empty.clear()

    def discard(self, transport: Transport) -> None:
        self.members.pop(transport, None)
        if not self.members:
            self.empty.set()

    def _run(self, pool: Any) -> None:
        try:
            while self.members:
                self.empty.wait()
        except gevent.GreenletExit:
            for server_stop in list(self.members.values()):
                try:
                    server_stop()
                except Exception:  # one broken connection must not keep the others open
                    logger.exception("could not close a parked connection")
            self.empty.wait(self.close_timeout)
            raise
        finally:
            if self._ties.get(pool) is self:
                del self._ties[pool]


def _take_buffered(reader: io.BufferedReader, sock: Any) -> tuple[bytes, bool]:
    """Bytes ``reader`` holds beyond the request head, read without waiting.

    Returns them and whether the reader is now empty, so that the socket can be
    read directly from then on. A non-blocking read of an empty reader gives b"".
    """
    chunks = []
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        for _ in range(16):
            chunk = reader.read1(RECV_SIZE)
            chunks.append(chunk)
            if len(chunk) < RECV_SIZE:
                return b"".join(chunks), True
    except OSError:
        return b"".join(chunks), False
    finally:
        sock.settimeout(timeout)
    return b"".join(chunks), False


def _nothing() -> None:
    pass


def _pywsgi_release(handler: Any) -> Callable[[], None]:
    def release() -> None:
        # Read no further request on a socket that is not the server's any more.
        handler.close_connection = True

    return release


def _socket_of_reader(reader: Any) -> Any:
    raw = getattr(reader, "raw", None)
    return getattr(raw, "_sock", None)


def _raw_reader(environ: dict[str, Any]) -> io.BufferedReader | Any:
    """pywsgi's buffered socket reader, even where it wrapped it in its ``Input``.

    pywsgi hands the raw reader over only when ``Connection`` is exactly
    "upgrade" or ``Upgrade`` exactly "websocket"; a valid handshake may list
    more tokens ("keep-alive, Upgrade" with "websocket, h2c"). Its ``Input``
    reads nothing before asked, so its ``rfile`` still holds every byte.
    """
    reader = environ.get("wsgi.input")
    inner = getattr(reader, "rfile", None)
    if not isinstance(reader, io.BufferedReader) and isinstance(inner, io.BufferedReader):
        return inner
    return reader


def detect(environ: dict[str, Any]) -> str:
    """Name the server kind of this request, or raise :class:`TransportUnavailable`."""
    gws = environ.get("wsgi.websocket")
    if gws is not None and getattr(getattr(gws, "stream", None), "handler", None) is not None:
        return "gevent-websocket"
    if "gunicorn.socket" in environ and "gunicorn.sock" not in environ:
        sock = environ["gunicorn.socket"]
        if not isinstance(sock, gevent.socket.socket):
            raise TransportUnavailable(
                "this gunicorn worker is not a gevent worker; WebSocket needs one of: " + SUPPORTED_SERVERS
            )
        return "gunicorn"
    reader = _raw_reader(environ)
    sock = environ.get("gunicorn.sock") or _socket_of_reader(reader)
    if isinstance(reader, io.BufferedReader) and isinstance(sock, gevent.socket.socket):
        return "pywsgi"
    raise TransportUnavailable(
        f"server {environ.get('SERVER_SOFTWARE', 'unknown')!r} cannot hand its socket over; "
        "WebSocket needs one of: " + SUPPORTED_SERVERS
    )


def _forget_request_head(start_response: Callable[..., Any]) -> None:
    """Let pywsgi's handler drop the parsed request headers and the sent 101 head.

    The handler lives as long as the connection, yet reads neither again once
    the 101 is out (the environ keeps every header the application sees), and
    both fall back to its class defaults. They are most of what an idle
    connection would otherwise keep of the HTTP request. Only pywsgi's own
    handler: subclasses may read them later (gunicorn's logs request headers).
    """
    handler: Any = getattr(start_response, "__self__", None)
    if type(handler) is _pywsgi.WSGIHandler and handler.headers_sent:
        # delattr, not handler.__dict__: reading that would build the dict the
        # instance otherwise keeps its attributes without.
        for name in ("headers", "response_headers"):
            try:
                delattr(handler, name)
            except AttributeError:
                pass


def take_over(
    kind: str,
    environ: dict[str, Any],
    start_response: Callable[..., Any],
    headers: list[tuple[str, str]],
) -> Transport:
    """Send the 101 with ``headers`` (unless already sent) and return the transport."""
    remote = environ.get("REMOTE_ADDR")
    if kind == "gevent-websocket":
        gws = environ["wsgi.websocket"]
        handler = gws.stream.handler

        def finish_gws(conn: Transport) -> list[bytes]:
            # Its handler closes "its" websocket after we return; we already did.
            gws.closed = True
            return []

        return Transport(handler.socket, reader=handler.rfile, finish=finish_gws, remote_addr=remote)
    if kind == "gunicorn":
        sock = environ["gunicorn.socket"]
        head = "HTTP/1.1 101 Switching Protocols\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        sock.sendall(head.encode("latin-1"))
        # Bytes gunicorn's parser read past the request head are still in its buffer.
        unreader = getattr(getattr(environ.get("wsgi.input"), "reader", None), "unreader", None)
        pending = b""
        if unreader is not None and hasattr(unreader, "take_buffered"):
            pending = unreader.take_buffered()
        elif unreader is not None and hasattr(unreader, "buf"):
            pending = unreader.buf.getvalue()
            unreader.buf = io.BytesIO()

        def finish_gunicorn(conn: Transport) -> Any:
            # After ALREADY_HANDLED its keep-alive loop reads the next request: fine
            # from a socket we shut down, but a parked connection's socket is no
            # longer its own. StopIteration ends that loop; it then closes only its
            # socket object, which closes nothing after a detach.
            if _GUNICORN_HANDLED is not None and not conn.detached:
                return _GUNICORN_HANDLED
            raise StopIteration()

        # Its pool is out of reach: a graceful stop reaches parked connections
        # through wsmiddleware.shutdown's signal hook instead.
        return Transport(sock, pending=pending, finish=finish_gunicorn, remote_addr=remote, release=_nothing)
    reader = _raw_reader(environ)
    sock = environ.get("gunicorn.sock") or _socket_of_reader(reader)
    write = start_response("101 Switching Protocols", headers)
    write(b"")
    _forget_request_head(start_response)
    owner = getattr(start_response, "__self__", None)
    release: Callable[[], None] | None = None
    pool = None
    if isinstance(owner, _pywsgi.WSGIHandler):
        pool = getattr(owner.server, "pool", None)
        release = _pywsgi_release(owner)
    conn = Transport(sock, reader=reader, remote_addr=remote, release=release, pool=pool)
    if conn._read is None and isinstance(reader, io.BufferedReader) and reader is environ.get("wsgi.input"):
        # All it buffered is in the transport now. Closing it frees its buffer for
        # the connection's lifetime (the socket stays open), and pywsgi, seeing it
        # closed, reads no further request once the connection ends. (Not when
        # pywsgi's Input wraps it: that one may still read a request body.)
        reader.close()  # type: ignore[union-attr]
    return conn
