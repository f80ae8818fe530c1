"""``MemoryPubSub``: the default backend, inside one process."""

from __future__ import annotations

from ..exceptions import PubSubError
from .base import Message, PubSub, Subscriber, check_message, deliver

__all__ = ["MemoryPubSub"]


class MemoryPubSub(PubSub):
    """Pub/sub among the subscribers of this process.

    ``publish`` delivers synchronously, in the caller's greenlet: when it
    returns, every WebSocket subscriber has the message queued (never waiting
    for a slow reader) and every callable subscriber has been called, so
    messages of one publisher arrive in the order they were published. With
    several worker processes, each has its own subscribers: use
    :class:`~wsmiddleware.pubsub.RedisPubSub` to reach all of them.
    """

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
        return deliver(self._subscriptions.matching(channel), channel, message, sender)

    def close(self) -> None:
        self._closed = True
        self._subscriptions.clear()
