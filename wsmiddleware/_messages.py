"""Message assembly: data frames in, whole messages out (pure, no I/O).

The ``websockets`` protocol checks the framing rules (continuations, sizes,
control frames); what it leaves to the application is joining fragments and
checking that text is UTF-8. Text is decoded fragment by fragment, so invalid
UTF-8 fails the connection as soon as it arrives, before the message is complete.
"""

from __future__ import annotations

import codecs
from typing import Any

from websockets.frames import Frame, Opcode

__all__ = ["Assembler", "InvalidText", "whole"]

_TEXT, _BINARY, _CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class InvalidText(ValueError):
    """A text message is not valid UTF-8 (close code 1007)."""


def whole(frame: Frame) -> str | bytes | None:
    """The message of a final data frame that no fragment precedes; ``None`` for a
    continuation (a stray one, after a failed message). Most messages are one frame:
    they need no :class:`Assembler`, and most connections never make one."""
    opcode = frame.opcode
    data = frame.data
    if opcode is _TEXT:
        try:
            return data.decode("utf-8") if type(data) is bytes else bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidText(f"invalid UTF-8: {exc.reason}") from None
    if opcode is _BINARY:
        return data if type(data) is bytes else bytes(data)
    return None


class Assembler:
    """Joins the data frames of one connection into ``str`` and ``bytes`` messages.

    ``feed(frame)`` returns the message a frame completes, or ``None``. The
    protocol guarantees that continuations follow a first frame, so a stray one
    (after a failed message) is ignored.
    """

    __slots__ = ("_parts", "_decoder")

    def __init__(self) -> None:
        self._parts: list[Any] | None = None
        self._decoder: Any = None

    @property
    def in_progress(self) -> bool:
        """Whether a fragmented message has started and not finished."""
        return self._parts is not None

    def feed(self, frame: Frame) -> str | bytes | None:
        opcode = frame.opcode
        data = frame.data
        if frame.fin and opcode is not _CONT:
            return whole(frame)
        if opcode is _TEXT:
            self._decoder = _utf8_decoder()
            self._parts = []
            self._append_text(data, False)
            return None
        if opcode is _BINARY:
            self._decoder = None
            self._parts = [bytes(data)]
            return None
        if opcode is not _CONT or self._parts is None:
            return None
        if self._decoder is not None:
            self._append_text(data, frame.fin)
            if not frame.fin:
                return None
            text = "".join(self._parts)
            self.reset()
            return text
        self._parts.append(bytes(data))
        if not frame.fin:
            return None
        payload = b"".join(self._parts)
        self.reset()
        return payload

    def reset(self) -> None:
        """Forget a message in progress (the connection is failing or closing)."""
        self._parts = self._decoder = None

    def _append_text(self, data: Any, final: bool) -> None:
        decoder = self._decoder
        try:
            self._parts.append(decoder.decode(data, final))  # type: ignore[union-attr]
        except UnicodeDecodeError as exc:
            self.reset()
            raise InvalidText(f"invalid UTF-8: {exc.reason}") from None
        # CPython's decoder waits for a third byte after ED A0..BF, though no
        # valid UTF-8 starts so (those would be surrogates): fail now, not a fragment later.
        pending = decoder.getstate()[0]
        if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
            self.reset()
            raise InvalidText("invalid UTF-8: invalid continuation byte")
