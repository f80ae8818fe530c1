"""The pub/sub interface every backend implements, and the local fan-out they share.

Vocabulary:

* A **channel** is a non-empty ``str``. A subscription is either to an exact
  channel name or to a **pattern**: an fnmatch-style glob (``*``, ``?``,
  ``[seq]``, ``[!seq]``, case-sensitive) such as ``"room:*"``. By default a name
  containing ``*``, ``?`` or ``[`` is a pattern; pass ``pattern=False`` to
  subscribe to such a name literally (``PubSubWS`` always does, so that a
  client cannot turn its room name into a wildcard).
* A **message** is ``str`` (delivered as a WebSocket text message) or ``bytes``
  (binary); backends keep the type end to end.
* A **subscriber** (the ``client`` argument) is any hashable callable
  ``client(channel, message)`` (the :class:`Subscriber` protocol). A
  :class:`~wsmiddleware.connection.WebSocket` is one: it writes what it gets.
  A subscriber class may also define ``deliver_group(subscribers, channel,
  message) -> int`` (a static method): the subscribers of one message that
  share it are handed over in one call, which is how all WebSocket subscribers
  of a message share one encoded frame. Subscribers run in the publisher's
  greenlet (memory) or the backend's reader greenlet (Redis): they must not
  block, and one that raises is logged without affecting the others.

A subscriber subscribed through several matching subscriptions (an exact name
and a pattern) receives a message once per matching subscription, as Redis does.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

__all__ = ["PubSub", "Subscriber", "Message", "Subscriptions", "is_pattern", "check_message", "deliver"]

if TYPE_CHECKING:  # pragma: no cover
    from .history import History, Position, Recovery

logger = logging.getLogger("wsmiddleware.pubsub")

Message = str | bytes


@runtime_checkable
class Subscriber(Protocol):
    """What pub/sub delivers to: a hashable callable ``(channel, message)``."""

    def __call__(self, channel: str, message: Message) -> Any: ...


#: subscriber class -> its ``deliver_group`` (or None), looked up once per class.
_groups: dict[type, Callable[..., int] | None] = {}
#: subscriber class -> whether it takes positions (``positioned = True``); filled with _groups.
_positioned: dict[type, bool] = {}

_GLOB_CHARS = frozenset("*?[")


def is_pattern(channel: str) -> bool:
    """Whether ``channel`` reads as a glob pattern (contains ``*``, ``?`` or ``[``)."""
    return not _GLOB_CHARS.isdisjoint(channel)


def check_channel(channel: str) -> str:
    if type(channel) is not str or not channel:
        raise TypeError(f"a channel is a non-empty str, not {channel!r}")
    return channel


def check_message(message: Any) -> Message:
    """Return ``message`` as ``str`` or ``bytes``; anything else is a ``TypeError``."""
    kind = type(message)
    if kind is str or kind is bytes:
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, str):
        return str(message)
    if isinstance(message, bytes):
        return bytes(message)
    raise TypeError(f"a pub/sub message is str (text) or bytes (binary), not {kind.__name__}")


def deliver(clients: Iterable[Subscriber], channel: str, message: Message, exclude: Any = None,
            position: Any = None) -> int:
    """Hand ``message`` to each client but ``exclude``; return how many took it.

    Subscribers whose class defines ``deliver_group`` are handed over in one
    call per such group (WebSocket connections: one encoded frame for all).
    Those whose class sets ``positioned = True`` are called with the message's
    history ``position`` as a third argument (see :mod:`.history`).
    """
    groups: dict[Callable[..., int], list[Any]] | None = None
    count = 0
    for client in clients:
        if exclude is not None and client == exclude:
            continue
        kind = type(client)
        try:
            group = _groups[kind]
        except KeyError:
            group = _groups[kind] = getattr(kind, "deliver_group", None)
            _positioned[kind] = getattr(kind, "positioned", False) is True
        if _positioned[kind]:
            try:
                client(channel, message, position)  # type: ignore[call-arg]
                count += 1
            except Exception:
                logger.exception("pub/sub subscriber %r raised on a message for %r", client, channel)
            continue
        if group is not None:
            if groups is None:
                groups = {}
            members = groups.get(group)
            if members is None:
                groups[group] = [client]
            else:
                members.append(client)
            continue
        try:
            client(channel, message)
            count += 1
        except Exception:
            logger.exception("pub/sub subscriber %r raised on a message for %r", client, channel)
    if groups:
        for group, members in groups.items():
            try:
                count += group(members, channel, message)
            except Exception:
                logger.exception("pub/sub delivery to %d subscriber(s) for %r raised", len(members), channel)
    return count


class Subscriptions:
    """Who is subscribed to what in this process.

    Keys are ``(is_pattern, name)``; each maps to an insertion-ordered set of
    subscribers. ``add``/``remove`` report when a key gains its first or loses
    its last subscriber, which is when a backend must tell its broker. Exact
    names and patterns live apart so that publishing costs one lookup plus one
    match per pattern, however many exact channels there are.
    """

    __slots__ = ("_tables", "_per_client", "count")

    def __init__(self) -> None:
        # _tables[False]: exact channel names; _tables[True]: patterns.
        self._tables: tuple[dict[str, dict[Subscriber, None]], dict[str, dict[Subscriber, None]]] = ({}, {})
        self._per_client: dict[Subscriber, int] = {}
        self.count = 0

    def add(self, key: tuple[bool, str], client: Subscriber) -> bool:
        """Subscribe; True if ``key`` had no subscriber before."""
        table = self._tables[key[0]]
        clients = table.get(key[1])
        new_key = clients is None
        if clients is None:
            clients = table[key[1]] = {}
        elif client in clients:
            return False
        clients[client] = None
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self.count += 1
        return new_key

    def remove(self, key: tuple[bool, str], client: Subscriber) -> bool:
        """Unsubscribe (a no-op if not subscribed); True if ``key`` has no subscriber left."""
        table = self._tables[key[0]]
        clients = table.get(key[1])
        if clients is None or client not in clients:
            return False
        del clients[client]
        left = self._per_client[client] - 1
        if left:
            self._per_client[client] = left
        else:
            del self._per_client[client]
        self.count -= 1
        if clients:
            return False
        del table[key[1]]
        return True

    def __contains__(self, key: tuple[bool, str]) -> bool:
        return key[1] in self._tables[key[0]]

    def keys(self) -> list[tuple[bool, str]]:
        return [(False, name) for name in self._tables[0]] + [(True, name) for name in self._tables[1]]

    def subscribed(self, client: Subscriber) -> bool:
        """Whether ``client`` has any subscription."""
        return client in self._per_client

    def of(self, key: tuple[bool, str]) -> list[Subscriber]:
        """A snapshot of the subscribers of one key (callbacks may unsubscribe meanwhile)."""
        clients = self._tables[key[0]].get(key[1])
        return list(clients) if clients else []

    def matching(self, channel: str) -> list[Subscriber]:
        """Subscribers of ``channel`` exactly, then of each pattern matching it."""
        exact, patterns = self._tables
        clients = exact.get(channel)
        found = list(clients) if clients else []
        for pattern, clients in patterns.items():
            if fnmatchcase(channel, pattern):
                found.extend(clients)
        return found

    def clear(self) -> None:
        for table in self._tables:
            table.clear()
        self._per_client.clear()
        self.count = 0


class PubSub(ABC):
    """Publish/subscribe, callable from any greenlet, HTTP views included.

    Backends: :class:`~wsmiddleware.pubsub.MemoryPubSub` (one process) and
    :class:`~wsmiddleware.pubsub.RedisPubSub` (across processes and hosts).
    """

    def __init__(self) -> None:
        self._subscriptions = Subscriptions()
        self._closed = False

    @staticmethod
    def _key(channel: str, pattern: bool | None) -> tuple[bool, str]:
        check_channel(channel)
        return (is_pattern(channel) if pattern is None else bool(pattern), channel)

    @abstractmethod
    def subscribe(self, channel: str, client: Subscriber, *, pattern: bool | None = None) -> None:
        """Deliver messages of ``channel`` (or matching the pattern) to ``client``.

        Once it returns, messages published afterwards reach ``client``
        (with Redis: as soon as Redis has confirmed, or after it comes back
        from an outage). Subscribing twice to the same key is a no-op.
        """

    @abstractmethod
    def unsubscribe(self, channel: str, client: Subscriber, *, pattern: bool | None = None) -> None:
        """Stop delivering ``channel`` to ``client``; a no-op if not subscribed."""

    @abstractmethod
    def publish(self, channel: str, message: Message, *, sender: Subscriber | None = None) -> int:
        """Send ``message`` to every subscriber of ``channel``, except ``sender``.

        ``sender`` is the subscriber on whose behalf the message is published,
        when it should not get its own message back. The return value is
        backend-specific (see each backend). Raises :class:`PubSubError` when
        the message cannot be sent.
        """

    @abstractmethod
    def close(self) -> None:
        """Drop every subscription and release connections; the object is unusable after."""

    # -- history (backends made with ``history=``; see :mod:`.history`) ---------------------

    def history_size(self, channel: str) -> int:
        """How many messages of ``channel`` this backend keeps (0: no history)."""
        return 0

    def history(self, channel: str, *, after: Position | None = None, limit: int | None = None) -> History:
        """The kept messages of ``channel``, oldest first: those after ``after`` (all
        kept ones if None), at most ``limit`` (the newest ones, if ``after`` is None;
        the oldest after it otherwise). Without history: no messages, not complete."""
        from .history import History

        return History("", 0, [], False)

    def resume(self, channel: str, client: Subscriber, since: Position | None = None) -> Recovery:
        """Subscribe ``client`` to ``channel`` (literally, never as a pattern), first
        replaying what it missed after ``since``.

        Every message after ``since`` reaches ``client`` once, in order: those
        already published from history, then the live ones, with none lost or
        repeated in between. When the gap cannot be filled (another epoch, or
        older than the history keeps), nothing is replayed and
        ``recovered`` is False; the live messages follow all the same.
        Subscribers must not block (as always): the hand-over from replay to
        live relies on it.
        """
        from .history import Position, Recovery, Seam, call

        if not self.history_size(channel):
            self.subscribe(channel, client, pattern=False)
            return Recovery(None if since is None else False, Position("", 0), 0)
        seam = Seam(client)
        # Live messages are held from before the history is read: a message can be in
        # both, never in neither. The offsets sort the overlap out.
        self.subscribe(channel, seam, pattern=False)
        try:
            found = self.history(channel, after=since, limit=0 if since is None else None)
            replayed = 0
            if since is None:
                recovered: bool | None = None
                last = found.head
            elif found.complete:
                recovered = True
                last = since.offset
                for offset, message in found.messages:
                    call(client, channel, message, Position(found.epoch, offset))
                    last = offset
                    replayed += 1
            else:
                recovered = False
                last = found.head
            # From here to the release nothing may switch greenlets: a message reaching
            # both the seam and the client would be given twice.
            self._take_over(channel, client, Position(found.epoch, last))
        finally:
            self.unsubscribe(channel, seam, pattern=False)
        last = seam.release(found.epoch, last)
        return Recovery(recovered, Position(found.epoch, last), replayed)

    def _take_over(self, channel: str, client: Subscriber, caught_up: Position) -> None:
        """Subscribe ``client`` to ``channel`` while the seam holds it, without switching
        greenlets once done; a backend whose live stream may lag behind its history
        first waits (the seam holding) until live delivery has reached ``caught_up``."""
        self.subscribe(channel, client, pattern=False)

    def subscription_count(self) -> int:
        """How many (channel or pattern, subscriber) pairs this process holds."""
        return self._subscriptions.count

    def is_subscribed(self, client: Subscriber) -> bool:
        """Whether ``client`` has any subscription in this process."""
        return self._subscriptions.subscribed(client)

    def __enter__(self) -> PubSub:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- presence (see :mod:`.presence`) --------------------------------------------------

    def join(self, channel: str, member: str, info: Any = None, *, announce: bool = False) -> None:
        """Make ``member`` (a non-empty ``str``) present on ``channel`` with ``info``.

        ``info`` must be JSON-serialisable (``TypeError`` here otherwise); it is
        what :meth:`presence` returns for the member, after a JSON round trip.
        Joining again replaces the info. ``announce``: also publish a join event
        on ``presence_channel(channel)`` (format: :mod:`.presence`). Raises
        :class:`PubSubError` only when the backend is closed: with Redis away,
        the member is kept in this process and written when Redis is back.
        """
        from .presence import check_member, encode_info

        check_channel(channel)
        check_member(member)
        text = encode_info(info)
        self._join(channel, member, text)
        if announce:
            self._announce("join", channel, member, text)

    def leave(self, channel: str, member: str, *, announce: bool = False) -> None:
        """Make ``member`` absent from ``channel``; a no-op if it is not there (or
        was joined by another process). Never raises :class:`PubSubError`.
        ``announce``: publish a leave event if it was present."""
        from .presence import check_member

        check_channel(channel)
        check_member(member)
        text = self._leave(channel, member)
        if text is not None and announce:
            self._announce("leave", channel, member, text)

    def presence(self, channel: str) -> dict[str, Any]:
        """The members of ``channel`` (id -> info) in every process sharing this backend."""
        raise NotImplementedError(f"{type(self).__name__} keeps no presence")

    def _join(self, channel: str, member: str, info: str) -> None:
        """Keep ``member`` with its JSON ``info``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no presence")

    def _leave(self, channel: str, member: str) -> str | None:
        """Drop ``member``; return the JSON info it had, None if it was not there."""
        raise NotImplementedError(f"{type(self).__name__} keeps no presence")

    def _announce(self, kind: str, channel: str, member: str, info: str) -> None:
        from ..exceptions import PubSubError
        from .presence import event, presence_channel

        try:
            self.publish(presence_channel(channel), event(kind, channel, member, info))
        except PubSubError as exc:
            # An announcement is best effort (presence() stays right): never fail a join for it.
            logger.debug("presence %s of %r on %r not announced: %s", kind, member, channel, exc)
