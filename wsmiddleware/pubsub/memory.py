"""``MemoryPubSub``: the default backend, inside one process."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from ..exceptions import PubSubError
from .base import Message, PubSub, Subscriber, check_message, deliver
from .history import History, HistorySizes, Position, new_epoch

__all__ = ["MemoryPubSub"]


class _Kept:
    """One channel's history: the newest messages and the offset of the last one."""

    __slots__ = ("entries", "head")

    def __init__(self, size: int) -> None:
        self.entries: deque[tuple[int, Message, float]] = deque(maxlen=size)
        self.head = 0


class MemoryPubSub(PubSub):
    """Pub/sub among the subscribers of this process.

    ``publish`` delivers synchronously, in the caller's greenlet: when it
    returns, every WebSocket subscriber has the message queued (never waiting
    for a slow reader) and every callable subscriber has been called, so
    messages of one publisher arrive in the order they were published. With
    several worker processes, each has its own subscribers: use
    :class:`~wsmiddleware.pubsub.RedisPubSub` to reach all of them.

    ``history``: keep the last N messages of every channel (an ``int``), or of
    the channels matching each glob (``{"chat:*": 100}``, first match wins), for
    :meth:`resume` and :meth:`history`; ``history_ttl``: forget messages older
    than this many seconds. The epoch is new with every instance: a restarted
    process has lost its history, and says so.

    Presence (:meth:`join`, :meth:`presence`) is kept per instance, in this process.
    """

    def __init__(self, *, history: int | Mapping[str, int] | None = None, history_ttl: float | None = None) -> None:
        super().__init__()
        self._sizes = HistorySizes(history)
        self._ttl = history_ttl
        self.epoch = new_epoch()
        self._kept: dict[str, _Kept] = {}
        #: channel -> member -> info as JSON (kept as text: presence() returns what Redis would)
        self._members: dict[str, dict[str, str]] = {}

    def subscribe(self, channel: str, client: Subscriber, *, pattern: bool | None = None) -> None:
        key = self._key(channel, pattern)
        if self._closed:
            raise PubSubError("this MemoryPubSub is closed")
        self._subscriptions.add(key, client)

    def unsubscribe(self, channel: str, client: Subscriber, *, pattern: bool | None = None) -> None:
        self._subscriptions.remove(self._key(channel, pattern), client)

    def publish(self, channel: str, message: Message, *, sender: Subscriber | None = None) -> int:
        """Deliver now; return how many subscribers took the message."""
        self._key(channel, False)
        message = check_message(message)
        if self._closed:
            raise PubSubError("this MemoryPubSub is closed")
        position = None
        if self._sizes:
            size = self._sizes.of(channel)
            if size:
                kept = self._kept.get(channel)
                if kept is None:
                    kept = self._kept[channel] = _Kept(size)
                kept.head += 1
                kept.entries.append((kept.head, message, time.monotonic()))
                position = Position(self.epoch, kept.head)
        return deliver(self._subscriptions.matching(channel), channel, message, sender, position)

    def history_size(self, channel: str) -> int:
        return self._sizes.of(channel) if self._sizes else 0

    def history(self, channel: str, *, after: Position | None = None, limit: int | None = None) -> History:
        kept = self._kept.get(channel)
        if kept is None:
            entries: list[tuple[int, Message, float]] = []
            head = 0
        else:
            if self._ttl is not None:
                too_old = time.monotonic() - self._ttl
                while kept.entries and kept.entries[0][2] < too_old:
                    kept.entries.popleft()
            entries, head = list(kept.entries), kept.head
        if after is None:
            chosen = entries if limit is None else entries[len(entries) - limit:] if limit else []
            return History(self.epoch, head, [(offset, message) for offset, message, _ in chosen], False)
        first = entries[0][0] if entries else head + 1
        complete = after.epoch == self.epoch and first - 1 <= after.offset <= head
        if not complete:
            return History(self.epoch, head, [], False)
        missed = [(offset, message) for offset, message, _ in entries if offset > after.offset]
        return History(self.epoch, head, missed if limit is None else missed[:limit], True)

    def presence(self, channel: str) -> dict[str, Any]:
        self._key(channel, False)
        return {member: json.loads(info) for member, info in self._members.get(channel, {}).items()}

    def _join(self, channel: str, member: str, info: str) -> None:
        if self._closed:
            raise PubSubError("this MemoryPubSub is closed")
        self._members.setdefault(channel, {})[member] = info

    def _leave(self, channel: str, member: str) -> str | None:
        members = self._members.get(channel)
        if not members or member not in members:
            return None
        info = members.pop(member)
        if not members:
            del self._members[channel]
        return info

    def close(self) -> None:
        self._closed = True
        self._subscriptions.clear()
        self._kept.clear()
        self._members.clear()
