"""The opening handshake (RFC 6455 section 4.2) checked on a WSGI request.

Validation speaks HTTP: each failure is a :class:`HandshakeError` carrying the
status a client should get (400, 403, 426) and a one-line reason. Extension
negotiation is left to the ``websockets`` sans-I/O server, which also hands us
the protocol object already configured with what was agreed.
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import webob
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.utils import accept_key

from .exceptions import HandshakeError
from .options import Options

__all__ = ["Accepted", "is_upgrade_request", "validate", "check_origin", "open_protocol", "accept", "rejection"]

logger = logging.getLogger("wsmiddleware.handshake")

_DEFAULT_PORTS = {"http": "80", "ws": "80", "https": "443", "wss": "443"}


def _tokens(value: str | None) -> set[str]:
    """Comma-separated header tokens, lower-cased ("keep-alive, Upgrade" -> {...})."""
    if not value:
        return set()
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def is_upgrade_request(environ: dict[str, Any]) -> bool:
    """Whether the request asks to switch to WebSocket (``Upgrade: websocket``)."""
    return "websocket" in _tokens(environ.get("HTTP_UPGRADE"))


def validate(request: webob.Request) -> str:
    """Check the RFC 6455 requirements; return the client's key or raise HandshakeError."""
    if request.method != "GET":
        raise HandshakeError(f"WebSocket handshake must use GET, not {request.method}", 400)
    if request.environ.get("SERVER_PROTOCOL", "HTTP/1.1").upper() in ("HTTP/1.0", "HTTP/0.9"):
        raise HandshakeError("WebSocket handshake needs HTTP/1.1 or later", 400)
    if "upgrade" not in _tokens(request.environ.get("HTTP_CONNECTION")):
        raise HandshakeError("missing 'upgrade' token in the Connection header", 400)
    key = request.environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip()
    if not key:
        raise HandshakeError("missing Sec-WebSocket-Key header", 400)
    try:
        raw_key = b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise HandshakeError("Sec-WebSocket-Key is not valid base64", 400) from None
    if len(raw_key) != 16:
        raise HandshakeError("Sec-WebSocket-Key must decode to 16 bytes", 400)
    version = request.environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
    if version != "13":
        what = f"version {version!r}" if version else "a missing version"
        raise HandshakeError(
            f"unsupported WebSocket {what}; this server speaks version 13",
            426,
            [("Sec-WebSocket-Version", "13"), ("Upgrade", "websocket")],
        )
    return key


def _host_port(netloc: str, scheme: str) -> str:
    netloc = netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(":" + default):
        netloc = netloc[: -len(default) - 1]
    return netloc


def check_origin(request: webob.Request, allowed_origins: tuple[str, ...] | None) -> None:
    """Apply the Origin policy: same-origin by default, else the allowed list (``*`` = any).

    Requests without an ``Origin`` header come from non-browser clients, which a
    cross-site attack cannot forge, so they pass.
    """
    origin = request.environ.get("HTTP_ORIGIN")
    if origin is None:
        return
    origin = origin.strip()
    if allowed_origins is not None:
        if "*" in allowed_origins or origin in allowed_origins:
            return
        raise HandshakeError(f"origin {origin!r} is not allowed", 403)
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. "http://[zz]": urlsplit validates bracketed hosts
        raise HandshakeError(f"malformed origin {origin!r} is not allowed", 403) from None
    host = request.environ.get("HTTP_HOST", "")
    if parts.scheme and parts.netloc and host:
        if _host_port(parts.netloc, parts.scheme) == _host_port(host, parts.scheme):
            return
    raise HandshakeError(f"cross-origin request from {origin!r} is not allowed", 403)


def select_subprotocol(request: webob.Request, supported: list[str] | tuple[str, ...] | None) -> str | None:
    """The first of the server's ``supported`` subprotocols that the client offers."""
    offered = offered_subprotocols(request)
    for candidate in supported or ():
        if candidate in offered:
            return candidate
    return None


def offered_subprotocols(request: webob.Request) -> list[str]:
    """Subprotocols listed by the client, in its order."""
    return [p.strip() for p in request.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",") if p.strip()]


class WSGIServerProtocol(ServerProtocol):
    """``ServerProtocol`` that leaves answering pings to the handler's ``on_ping``.

    The sans-I/O layer answers pings itself; our ``WS.on_ping`` contract is that
    the default callback pongs, so that an override can choose not to.
    """

    # The WSGI server has parsed the HTTP request already: start at frames. Taken
    # as is rather than wrapped, so an idle connection suspends one generator less.
    parse = Protocol.parse

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            self.events.append(frame)
            return
        if frame.opcode is Opcode.CLOSE and self.current_size is not None:
            # Control frames may interleave a fragmented message (RFC 6455 5.4), the
            # close frame too: the unfinished message is dropped and the closing
            # handshake proceeds normally instead of failing with 1002 (Autobahn 7.1.5).
            self.current_size = None
        super().recv_frame(frame)


@dataclass
class Accepted:
    """What a successful handshake produced: the 101 headers and the open protocol."""

    headers: list[tuple[str, str]]
    protocol: WSGIServerProtocol
    subprotocol: str | None


def _extension_factories(options: Options) -> tuple[ServerPerMessageDeflateFactory, ...]:
    if options.compression != "deflate":
        # Shared: the protocol keeps what it is given for the connection's lifetime.
        return ()
    # Window 2**12 and memLevel 5 keep a compressor near 64 KiB instead of the
    # ~320 KiB of zlib's defaults, at little cost in ratio for chat-sized messages.
    return (
        ServerPerMessageDeflateFactory(
            server_max_window_bits=12,
            compress_settings={"memLevel": 5},
        ),
    )


def open_protocol(options: Options, extensions: tuple[ServerPerMessageDeflateFactory, ...] = ()) -> WSGIServerProtocol:
    """A protocol in the OPEN state, for a connection whose HTTP handshake is done.

    ``extensions`` are the factories it may still negotiate (see :func:`accept`).
    """
    protocol = WSGIServerProtocol(
        extensions=extensions,
        max_size=options.max_message_size,
        logger=logging.getLogger("wsmiddleware.protocol"),
    )
    protocol.state = State.OPEN
    return protocol


def accept(request: webob.Request, key: str, options: Options, subprotocol: str | None) -> Accepted:
    """Negotiate extensions and build the 101 answer plus an OPEN protocol object."""
    protocol = open_protocol(options, _extension_factories(options))
    ws_headers = Headers()
    extensions_value = request.environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS")
    try:
        if extensions_value:
            # Setting it checks the characters (a control character is refused here).
            ws_headers["Sec-WebSocket-Extensions"] = extensions_value
        extensions_header, extensions = protocol.process_extensions(ws_headers)
    except InvalidHandshake as exc:
        raise HandshakeError(f"invalid Sec-WebSocket-Extensions header: {exc}", 400) from None
    protocol.extensions = extensions
    protocol.subprotocol = subprotocol  # type: ignore[assignment]
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if extensions_header is not None:
        headers.append(("Sec-WebSocket-Extensions", extensions_header))
    if subprotocol is not None:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    return Accepted(headers, protocol, subprotocol)


def rejection(error: HandshakeError) -> webob.Response:
    """A plain-text response with the one-line reason, closing the connection."""
    response = webob.Response(
        status=error.status,
        content_type="text/plain",
        charset="utf-8",
        text=error.reason + "\n",
    )
    for name, value in error.headers:
        response.headers[name] = value
    response.headers["Connection"] = "close"
    return response
