"""The ``PUBLISH`` payload format of :class:`~wsmiddleware.pubsub.RedisPubSub`, and glob translation.

Documented in :mod:`wsmiddleware.pubsub.redis` (which re-exports these names):
one type byte, then the body; ``0x03`` / ``0x04`` carry a 16-byte origin first;
``0x05`` wraps one of those with the message's history position
(``0x05 <epoch>:<offset> 0x00 <payload>``), added by the publish script of a
channel with history.
"""

from __future__ import annotations

from typing import cast

from .base import Message
from .history import Position

__all__ = ["encode_message", "decode_message", "decode_positioned", "redis_glob"]

_TEXT, _BINARY, _TEXT_FROM, _BINARY_FROM, _POSITIONED = 1, 2, 3, 4, 5
_ORIGIN_SIZE = 16
_TEXT_TAG, _BINARY_TAG = b"\x01", b"\x02"
_TEXT_FROM_TAG, _BINARY_FROM_TAG = b"\x03", b"\x04"


def encode_message(message: Message, origin: bytes | None = None) -> bytes:
    """The ``PUBLISH`` payload of ``message`` (format: see :mod:`wsmiddleware.pubsub.redis`)."""
    if type(message) is str:
        body = message.encode("utf-8")
        if origin is None:
            return _TEXT_TAG + body
        return _TEXT_FROM_TAG + origin + body
    binary = cast(bytes, message)
    if origin is None:
        return _BINARY_TAG + binary
    return _BINARY_FROM_TAG + origin + binary


def decode_positioned(data: bytes) -> tuple[Message, bytes | None, Position | None]:
    """``(message, origin, position)`` from a ``PUBLISH`` payload, ours or a foreign one."""
    if data[:1] == b"\x05":
        end = data.find(b"\x00", 1, 64)
        if end > 0:
            try:
                position = Position.parse(data[1:end].decode("ascii"))
            except ValueError:
                position = None
            if position is not None:
                message, origin = decode_message(data[end + 1 :])
                return message, origin, position
    message, origin = decode_message(data)
    return message, origin, None


def decode_message(data: bytes) -> tuple[Message, bytes | None]:
    """``(message, origin)`` from a ``PUBLISH`` payload, ours or a foreign one
    (a history position, if any, is dropped: see :func:`decode_positioned`)."""
    tag = data[0] if data else 0
    if tag == _POSITIONED:
        end = data.find(b"\x00", 1, 64)
        if end > 0 and data[1:end].count(b":") == 1:
            return decode_message(data[end + 1 :])
    origin = None
    if tag == _TEXT or tag == _BINARY:
        body = data[1:]
    elif (tag == _TEXT_FROM or tag == _BINARY_FROM) and len(data) > _ORIGIN_SIZE:
        origin = data[1 : 1 + _ORIGIN_SIZE]
        body = data[1 + _ORIGIN_SIZE :]
        tag -= 2
    else:
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            return data, None
    if tag == _BINARY:
        return body, origin
    try:
        return body.decode("utf-8"), origin
    except UnicodeDecodeError:
        # A foreign publisher mislabelled it: deliver the bytes rather than lose them.
        return body, origin


def redis_glob(pattern: str) -> str:
    """Translate an fnmatch pattern to Redis glob syntax with the same meaning.

    fnmatch has no escape character and negates sets with ``!``; Redis treats
    ``\\`` as an escape and negates with ``^``.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: fnmatch reads a literal "["
                out.append("\\[")
                continue
            body = pattern[i:j]
            i = j + 1
            out.append("[")
            if body.startswith("!"):
                out.append("^")
                body = body[1:]
            out.append("".join("\\" + ch if ch in "\\]^[" else ch for ch in body))
            out.append("]")
        elif c == "\\":
            out.append("\\\\")
        else:
            out.append(c)
    return "".join(out)
