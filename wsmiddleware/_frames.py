"""Server frames for data messages, encoded once and shareable (pure)."""

from __future__ import annotations

import logging
import struct
from typing import Any

from websockets.frames import Frame, Opcode

__all__ = ["encode_frame", "protocol_logger"]

#: The websockets protocol objects log through this one. They note every
#: connection opening and closing at INFO: quiet unless asked for.
_protocol_logger = logging.getLogger("wsmiddleware.protocol")
if _protocol_logger.level == logging.NOTSET:
    _protocol_logger.setLevel(logging.WARNING)


def protocol_logger() -> logging.Logger:
    return _protocol_logger

_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY


def _as_message(message: Any) -> str | bytes | bytearray | memoryview:
    """``message`` as text or binary; ``str`` subclasses (markupsafe.Markup...) are text."""
    if type(message) is str or isinstance(message, (bytes, bytearray, memoryview)):
        return message
    if isinstance(message, str):
        return str(message)
    raise TypeError(f"a WebSocket message is str or bytes, not {type(message).__name__}")


def _opcode_and_payload(message: str | bytes | bytearray | memoryview) -> tuple[Opcode, Any]:
    if type(message) is str:
        return _TEXT, message.encode("utf-8")
    return _BINARY, message


_HEADER_64 = struct.Struct("!BBQ")


def large_frame_header(opcode: Opcode, length: int) -> bytes:
    """The header websockets' ``Frame.serialize`` writes for a final, unmasked,
    uncompressed data frame of ``length`` >= 65536 bytes: a 64-bit length (RFC 6455 5.2)."""
    return _HEADER_64.pack(0x80 | opcode, 127, length)


def encode_frame(message: str | bytes | bytearray | memoryview) -> bytes:
    """The unmasked, uncompressed server frame of a text (``str``) or binary message.

    Its bytes are the same for every server connection without an extension in
    effect, which is what lets a broadcast encode once.
    """
    if type(message) is not str:
        message = _as_message(message)
    return Frame(*_opcode_and_payload(message)).serialize(mask=False)
