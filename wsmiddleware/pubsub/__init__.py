"""Pub/sub backends: :class:`MemoryPubSub` (default, one process) and
:class:`RedisPubSub` (across processes and hosts, needs the ``redis`` extra).

``RedisPubSub`` is imported on first use so that ``redis`` stays optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Message, PubSub, Subscriber
from .history import History, Position, Recovery
from .memory import MemoryPubSub
from .presence import presence_channel

if TYPE_CHECKING:  # pragma: no cover
    from .redis import RedisPubSub

__all__ = ["PubSub", "MemoryPubSub", "RedisPubSub", "Subscriber", "Message", "Position", "History", "Recovery",
           "presence_channel"]


def __getattr__(name: str) -> Any:
    if name == "RedisPubSub":
        from .redis import RedisPubSub

        return RedisPubSub
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
