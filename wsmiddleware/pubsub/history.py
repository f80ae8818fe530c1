"""Channel history: positions, the per-channel sizes a backend keeps, and resuming a
subscriber from a position with nothing lost or repeated at the seam (pure logic; the
backends store the messages).

A channel with history gives every message a :class:`Position`: an ``offset``
that grows by one per message, within an ``epoch`` that changes whenever the
history is lost (a Redis flush, a new MemoryPubSub). A subscriber that knows
the position of the last message it got can ask for what came after it:
:meth:`~wsmiddleware.pubsub.PubSub.resume` replays the missed messages in order,
then the live ones, each exactly once; or says the gap cannot be filled (the
epoch changed, or the gap is older than what the history keeps), and never
replays part of a gap.

Subscribers whose class sets ``positioned = True`` are called
``client(channel, message, position)`` (``position`` is ``None`` on channels
without history); others keep getting ``client(channel, message)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

from .base import Message

__all__ = ["Position", "History", "Recovery", "HistorySizes", "new_epoch", "Seam"]


class Position(NamedTuple):
    """Where a message is in its channel's history."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """The inverse of ``str(position)``: ``"<epoch>:<offset>"``; ``ValueError`` otherwise."""
        epoch, sep, offset = text.rpartition(":")
        if not sep or not epoch or not offset.isdigit():
            raise ValueError(f"not a history position: {text!r} (expected '<epoch>:<offset>')")
        return cls(epoch, int(offset))


class History(NamedTuple):
    """What a channel's history holds after a given offset (see ``PubSub.history``).

    ``head`` is the offset of the newest message (0 before the first);
    ``complete`` whether ``messages`` start right after the offset asked for
    (False: older messages are gone, or the epoch differs).
    """

    epoch: str
    head: int
    messages: list[tuple[int, Message]]
    complete: bool


class Recovery(NamedTuple):
    """The outcome of ``PubSub.resume``.

    ``recovered``: True if every missed message was replayed, False if the gap
    could not be filled (the subscriber should resynchronise some other way),
    None if no position was given. ``position``: the subscriber's position once
    resumed (the last message it was given, or the channel's head).
    ``replayed``: how many messages came from history.
    """

    recovered: bool | None
    position: Position
    replayed: int


def new_epoch() -> str:
    """A fresh epoch: short, unique, URL- and header-safe."""
    return os.urandom(6).hex()


class HistorySizes:
    """How many messages each channel keeps: ``int`` for all, or ``{glob: int}`` (first match wins)."""

    __slots__ = ("_default", "_patterns")

    def __init__(self, spec: int | Mapping[str, int] | None) -> None:
        self._default = 0
        self._patterns: list[tuple[str, int]] = []
        if spec is None:
            return
        if isinstance(spec, bool) or not isinstance(spec, (int, Mapping)):
            raise TypeError(f"history is an int or a mapping of channel patterns to ints, not {spec!r}")
        if isinstance(spec, int):
            self._default = _check_size(spec)
        else:
            self._patterns = [(str(pattern), _check_size(size)) for pattern, size in spec.items()]

    def __bool__(self) -> bool:
        return bool(self._default or any(size for _, size in self._patterns))

    def of(self, channel: str) -> int:
        for pattern, size in self._patterns:
            if fnmatchcase(channel, pattern):
                return size
        return self._default


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"a history size is an int >= 0, not {size!r}")
    return size


def is_positioned(client: Any) -> bool:
    return getattr(type(client), "positioned", False) is True


def call(client: Any, channel: str, message: Message, position: Position | None) -> None:
    if is_positioned(client):
        client(channel, message, position)
    else:
        client(channel, message)


class Seam:
    """Stands for a subscriber while its history is read: holds live messages back,
    then hands over those after the replay, in order, exactly once."""

    positioned = True
    __slots__ = ("client", "held", "__weakref__")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.held: list[tuple[str, Message, Position | None]] = []

    def __call__(self, channel: str, message: Message, position: Position | None = None) -> None:
        self.held.append((channel, message, position))

    def release(self, epoch: str, after: int) -> int:
        """Give the client what was held and comes after ``after`` in ``epoch``;
        return the last offset given (``after`` if none)."""
        last = after
        for channel, message, position in self.held:
            if position is not None:
                if position.epoch == epoch and position.offset <= last:
                    continue  # replayed already
                if position.epoch == epoch:
                    last = position.offset
            call(self.client, channel, message, position)
        self.held.clear()
        return last
