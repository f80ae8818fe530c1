"""A gevent WebSocket client on the same engine as the server side.

The opening handshake is built and checked by the ``websockets`` sans-I/O
client; the open connection is the very :class:`~wsmiddleware.WebSocket` the
server hands its callbacks, with its read loop in a greenlet. So a :class:`WS`
handler works unchanged on either end, and without a handler the connection
offers a blocking ``receive()`` fed by a small built-in handler.

Everything here is cooperative: it makes progress while the calling code waits
in gevent (``receive``, ``wait_closed``, ``gevent.sleep``, or any I/O of a
monkey-patched process). A plain ``time.sleep`` in an unpatched process stalls it.
"""

from __future__ import annotations

import logging
import socket
import ssl as _ssl
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NoReturn, overload

import gevent
import gevent.queue
import gevent.socket
import gevent.ssl
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from ._client_connection import ClientConnection, _Inbox
from ._frames import protocol_logger
from ._reconnect import ReconnectingConnection
from .connection import WebSocket
from .exceptions import ConnectionClosed, ConnectionRejected, ConnectionTimeout
from .handler import WS
from .options import Options
from .transport import RECV_SIZE
from .transport._takeover import transport_for

__all__ = ["connect", "ClientConnection", "ClientProtocol", "ReconnectingConnection"]

logger = logging.getLogger("wsmiddleware.client")

#: Largest HTTP response head accepted during the opening handshake.
MAX_RESPONSE_HEAD = 64 * 1024


def _extensions(compression: str | None) -> list[ClientPerMessageDeflateFactory] | None:
    if compression is None:
        return None
    if compression != "deflate":
        raise ValueError("compression must be 'deflate' or None")
    # memLevel 5 keeps a compressor near 64 KiB instead of zlib's ~320 KiB default.
    return [ClientPerMessageDeflateFactory(client_max_window_bits=True, compress_settings={"memLevel": 5})]


def _header_items(headers: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _open_socket(host: str, port: int, secure: bool, ssl_context: Any, server_hostname: str | None,
                 timeout: float | None) -> Any:
    sock = gevent.socket.create_connection((host, port), timeout=timeout)
    try:
        # Small request/response messages must not wait for Nagle's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if secure:
            context = ssl_context if isinstance(ssl_context, _ssl.SSLContext) else gevent.ssl.create_default_context()
            # gevent's SSLSocket works with a standard-library context too, and waits cooperatively.
            sock = gevent.ssl.SSLSocket(sock=sock, server_hostname=server_hostname or host, _context=context)
    except BaseException:
        sock.close()
        raise
    return sock


def _read_response(sock: Any, protocol: ClientProtocol) -> tuple[Response | None, bytes]:
    """Read the server's answer; return it and the bytes that came after its head.

    Only the head of a ``101`` goes through the protocol's parser: the bytes after
    it are frames the connection's read loop must see, in order.
    """
    buffer = b""
    head_fed = False
    while True:
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            protocol.receive_eof()
        elif head_fed:
            protocol.receive_data(chunk)  # the body of a rejection
        else:
            buffer += chunk
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_RESPONSE_HEAD:
                    protocol.receive_data(buffer)  # lets the parser report "line too long"
                    protocol.receive_eof()
                    return None, b""
                continue
            head, rest = buffer[: end + 4], buffer[end + 4 :]
            protocol.receive_data(head)
            head_fed = True
            events = protocol.events_received()
            if events:
                return events[0], rest  # type: ignore[return-value]
            protocol.receive_data(rest)
        events = protocol.events_received()
        if events:
            return events[0], b""  # type: ignore[return-value]
        if not chunk or protocol.handshake_exc is not None:
            return None, b""


@overload
def connect(url: str, handler: WS | type[WS] | None = None, *, reconnect: Literal[False] = False,
            **options: Any) -> ClientConnection: ...


@overload
def connect(url: str, handler: None = None, *, reconnect: Literal[True], **options: Any) -> ReconnectingConnection: ...


def connect(  # type: ignore[misc]
    url: str,
    handler: WS | type[WS] | None = None,
    *,
    reconnect: bool = False,
    reconnect_delay: float = 0.1,
    max_reconnect_delay: float = 10.0,
    subprotocols: Sequence[str] | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    origin: str | None = None,
    compression: Literal["deflate"] | None = "deflate",
    open_timeout: float | None = 10.0,
    close_timeout: float = 5.0,
    max_message_size: int | None = 2**20,
    ping_interval: float | None = None,
    ping_timeout: float | None = 20.0,
    send_queue_limit: int = 4 * 2**20,
    max_queue: int | None = 64,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> ClientConnection | ReconnectingConnection:
    """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``).

    With a ``handler`` (a :class:`WS` instance, or a subclass to instantiate),
    its callbacks run in the connection's read greenlet exactly as on the server.
    Without one, read messages with :meth:`ClientConnection.receive` or by
    iterating. ``max_queue`` bounds the messages held for ``receive``; beyond it
    reading pauses, which slows the server down instead of growing memory.

    ``ssl`` is an ``ssl.SSLContext`` for ``wss://`` (default: the system's
    trusted CAs). ``open_timeout`` covers TCP connect, TLS and the handshake.
    Raises :class:`ConnectionRejected` for any answer but a valid ``101``,
    :class:`ConnectionTimeout` when ``open_timeout`` passes, ``OSError`` when the
    server cannot be reached.

    ``reconnect=True`` (without a handler) returns a
    :class:`~wsmiddleware._reconnect.ReconnectingConnection`: when the
    connection is lost it reconnects with capped exponential backoff and jitter
    (``reconnect_delay`` doubling up to ``max_reconnect_delay`` seconds), and,
    on ``PubSubWS`` routes with history, resumes after the last message
    received (``connection.recovered`` says whether it got all it missed).
    The first connection's failure raises as above.
    """
    options = dict(
        subprotocols=subprotocols, headers=headers, origin=origin, compression=compression,
        open_timeout=open_timeout, close_timeout=close_timeout, max_message_size=max_message_size,
        ping_interval=ping_interval, ping_timeout=ping_timeout, send_queue_limit=send_queue_limit,
        max_queue=max_queue, ssl=ssl, server_hostname=server_hostname,
    )
    if not reconnect:
        return _connect_once(url, handler, **options)  # type: ignore[arg-type]
    if handler is not None:
        raise ValueError("reconnect=True reads with receive(): it takes no handler")
    from .recovery import SUBPROTOCOL

    offered = list(subprotocols or ())
    if SUBPROTOCOL not in offered:
        offered.append(SUBPROTOCOL)
    options["subprotocols"] = offered

    def open_one(target: str) -> ClientConnection:
        return _connect_once(target, None, **options)  # type: ignore[arg-type]

    return ReconnectingConnection(url, open_one, reconnect_delay=reconnect_delay,
                                  max_reconnect_delay=max_reconnect_delay,
                                  write_timeout=open_timeout or 10.0, max_queue=max_queue)


def _connect_once(
    url: str,
    handler: WS | type[WS] | None = None,
    *,
    subprotocols: Sequence[str] | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    origin: str | None = None,
    compression: Literal["deflate"] | None = "deflate",
    open_timeout: float | None = 10.0,
    close_timeout: float = 5.0,
    max_message_size: int | None = 2**20,
    ping_interval: float | None = None,
    ping_timeout: float | None = 20.0,
    send_queue_limit: int = 4 * 2**20,
    max_queue: int | None = 64,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> ClientConnection:
    """One connection (see :func:`connect`)."""
    try:
        uri = parse_uri(url)
    except InvalidURI as exc:
        raise ValueError(f"not a WebSocket URL: {url!r} ({exc})") from None
    if max_queue is not None and max_queue < 1:
        raise ValueError("max_queue must be None (unbounded) or at least 1")
    options = Options().merged({
        "compression": compression,
        "close_timeout": close_timeout,
        "max_message_size": max_message_size,
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "send_queue_limit": send_queue_limit,
    })
    protocol = ClientProtocol(
        uri,
        origin=origin,  # type: ignore[arg-type]
        extensions=_extensions(compression),
        subprotocols=list(subprotocols) if subprotocols else None,  # type: ignore[arg-type]
        max_size=max_message_size,
        logger=protocol_logger(),
    )
    # The handler exists before any socket does: a failing constructor leaks nothing.
    inbox: _Inbox | None = None
    target: WS
    if handler is None:
        target = inbox = _Inbox(max_queue)
    elif isinstance(handler, type):
        target = handler()
    else:
        target = handler
    request = protocol.connect()
    for name, value in _header_items(headers):
        request.headers[name] = value
    protocol.send_request(request)

    sock = None
    timer = gevent.Timeout(open_timeout) if open_timeout is not None else None
    if timer is not None:
        timer.start()
    try:
        sock = _open_socket(uri.host, uri.port, uri.secure, ssl, server_hostname, open_timeout)
        sock.sendall(b"".join(protocol.data_to_send()))
        response, rest = _read_response(sock, protocol)
    except (gevent.Timeout, TimeoutError) as exc:
        # The socket's own timeout (same length) may fire before the overall one.
        if isinstance(exc, gevent.Timeout) and exc is not timer:
            raise
        if sock is not None:
            sock.close()
        raise ConnectionTimeout(f"opening handshake with {uri.host}:{uri.port} took over {open_timeout} s") from None
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    finally:
        if timer is not None:
            timer.close()

    if response is None or protocol.state is not State.OPEN:
        sock.close()
        _raise_rejected(response, protocol.handshake_exc, uri.host, uri.port)
    sock.settimeout(None)
    try:
        peer = sock.getpeername()[0]
    except OSError:
        peer = uri.host
    transport = transport_for(sock, pending=rest, remote_addr=peer, detach=True)
    subprotocol = response.headers.get("Sec-WebSocket-Protocol")
    compressed = "Sec-WebSocket-Extensions" in response.headers
    websocket = WebSocket(transport, protocol, target, options, subprotocol=subprotocol, compressed=compressed,
                          client=True)
    websocket.path = uri.resource_name
    logger.debug("connected to %s (subprotocol %s)", url, subprotocol)
    return ClientConnection(websocket, response, inbox)


def _raise_rejected(response: Response | None, exc: Exception | None, host: str, port: int) -> NoReturn:
    if response is None:
        raise ConnectionClosed(1006, f"no valid HTTP answer to the opening handshake from {host}:{port}: {exc}") from exc
    headers = list(response.headers.raw_items())
    body = bytes(response.body or b"")
    error = ConnectionRejected(response.status_code, headers, body)
    if not isinstance(exc, InvalidStatus) and isinstance(exc, InvalidHandshake):
        # A 101 the client cannot accept (wrong accept key, unknown extension...).
        error.args = (f"invalid WebSocket handshake answer from {host}:{port}: {exc}",)
    raise error from exc

