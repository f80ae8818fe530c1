"""The opening handshake (RFC 6455 section 4.2) checked on a WSGI request.

Validation speaks HTTP: each failure is a :class:`HandshakeError` carrying the
status a client should get (400, 403, 426) and a one-line reason. Extension
negotiation is left to the ``websockets`` sans-I/O server, which also hands us
the protocol object already configured with what was agreed.
"""

from __future__ import annotations

import binascii
import logging
import re
from base64 import b64decode
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import webob
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.protocol import Protocol, Side, State
from websockets.server import ServerProtocol
from websockets.version import version as websockets_version

from ._frames import protocol_logger as _protocol_logger
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


def select_subprotocol(request: webob.Request, supported: Sequence[str] | None) -> str | None:
    """The first of the server's ``supported`` subprotocols that the client offers."""
    offered = offered_subprotocols(request)
    for candidate in supported or ():
        if candidate in offered:
            return candidate
    return None


def offered_subprotocols(request: webob.Request) -> list[str]:
    """Subprotocols listed by the client, in its order."""
    return [p.strip() for p in request.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(",") if p.strip()]


@dataclass
class Accepted:
    """What a successful handshake produced: the 101 headers and the open protocol."""

    headers: list[tuple[str, str]]
    protocol: Protocol
    subprotocol: str | None
    compressed: bool = False


#: Before websockets 17.2, zlib refuses the raw-deflate window of 2**8 that a
#: ``server_max_window_bits=8`` offer makes it negotiate (a ValueError, which
#: its handshake turns into a 500). Such offers are left out of the negotiation
#: there: another offer of the client's may still be taken, else no compression.
_SMALL_WINDOW_FAILS = tuple(int(part) for part in re.findall(r"\d+", websockets_version)[:2]) < (17, 2)
_SMALL_WINDOW = re.compile(r"server_max_window_bits\s*=\s*\"?0*8\"?\s*(?:[;,]|$)", re.IGNORECASE)


def _negotiable(offer: str | None) -> str | None:
    """The client's extension offers this websockets version can negotiate."""
    if not offer or not _SMALL_WINDOW_FAILS or not _SMALL_WINDOW.search(offer):
        return offer
    kept = [item for item in offer.split(",") if not _SMALL_WINDOW.search(item.strip())]
    logger.info("permessage-deflate offer(s) with server_max_window_bits=8 left out: this websockets "
                "version cannot compress with that window")
    return ",".join(kept).strip() or None


def _extension_factories(options: Options, offer: str | None) -> list[ServerPerMessageDeflateFactory]:
    if options.compression != "deflate" or not offer:
        return []
    # Window 2**12 and memLevel 5 keep a compressor near 64 KiB instead of the
    # ~320 KiB of zlib's defaults, at little cost in ratio for chat-sized messages.
    return [ServerPerMessageDeflateFactory(server_max_window_bits=12, compress_settings={"memLevel": 5})]


def open_protocol(options: Options) -> Protocol:
    """A server-side protocol in the OPEN state, for a connection with no extension
    whose HTTP handshake is done (here, or by gevent-websocket).

    websockets' documented base class, not a ``ServerProtocol``: that one's parser
    is a generator for the request wrapped around the frame parser's, kept for the
    connection's lifetime."""
    return Protocol(Side.SERVER, state=State.OPEN, max_size=options.max_message_size, logger=_protocol_logger())


def _header_line(name: str, value: str) -> str:
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise HandshakeError(f"invalid {name} header: control character", 400)
    return f"{name}: {value}\r\n"


def accept(request: webob.Request, key: str, options: Options, subprotocol: str | None) -> Accepted:
    """Negotiate extensions and build the 101 answer plus an OPEN protocol object.

    The request is already validated (:func:`validate`); websockets' sans-I/O
    server does the negotiation from the headers that matter to it, through its
    documented ``accept`` / ``send_response``.
    """
    environ = request.environ
    offer = _negotiable(environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS"))
    negotiating = ServerProtocol(
        extensions=_extension_factories(options, offer),
        subprotocols=[subprotocol] if subprotocol is not None else None,  # type: ignore[list-item]
        max_size=options.max_message_size,
        logger=_protocol_logger(),
    )
    head = ["GET / HTTP/1.1\r\n", "Upgrade: websocket\r\n", "Connection: Upgrade\r\n",
            _header_line("Sec-WebSocket-Key", key), "Sec-WebSocket-Version: 13\r\n"]
    if offer:
        head.append(_header_line("Sec-WebSocket-Extensions", offer))
    if subprotocol is not None:
        head.append(_header_line("Sec-WebSocket-Protocol", subprotocol))
    head.append("\r\n")
    try:
        raw = "".join(head).encode("latin-1")
    except UnicodeEncodeError:
        raise HandshakeError("invalid header: not latin-1", 400) from None
    negotiating.receive_data(raw)
    events = negotiating.events_received()
    if not events:
        raise HandshakeError(f"invalid handshake: {negotiating.handshake_exc}", 400)
    response = negotiating.accept(events[0])  # type: ignore[arg-type]
    if response.status_code != 101:
        raise HandshakeError(f"invalid Sec-WebSocket-Extensions header: {negotiating.handshake_exc}", 400)
    negotiating.send_response(response)
    negotiating.data_to_send()  # the 101 goes out through the WSGI server instead
    headers = [(name, value) for name, value in response.headers.raw_items()
               if name.lower() not in ("date", "server")]
    compressed = "Sec-WebSocket-Extensions" in response.headers
    chosen = response.headers.get("Sec-WebSocket-Protocol")
    if not compressed:
        # The negotiating protocol's parser keeps the parsed request alive for the
        # connection's lifetime; with no extension agreed, a protocol opened directly
        # is the same, minus that (about 2.5 KiB per idle connection).
        return Accepted(headers, open_protocol(options), chosen, compressed)
    return Accepted(headers, negotiating, chosen, compressed)


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
