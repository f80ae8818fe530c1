"""The ``PUBLISH`` payload format of :class:`~wsmiddleware.pubsub.RedisPubSub`, and glob translation.

Documented in :mod:`wsmiddleware.pubsub.redis` (which re-exports these names):
one type byte, then the body; ``0x03`` / ``0x04`` carry a 16-byte origin first.
"""

from __future__ import annotations

from typing import cast

from .base import Message

__all__ = ["encode_message", "decode_message", "redis_glob"]

_TEXT, _BINARY, _TEXT_FROM, _BINARY_FROM = 1, 2, 3, 4
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


def decode_message(data: bytes) -> tuple[Message, bytes | None]:
    """``(message, origin)`` from a ``PUBLISH`` payload, ours or a foreign one."""
    tag = data[0] if data else 0
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
