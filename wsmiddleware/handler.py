"""Handlers: the callback objects routes are mounted with.

Shaped after pulsar's ``WS``: every callback is optional and receives the
:class:`~wsmiddleware.connection.WebSocket` it concerns. A route mapped to an
instance shares it among its connections; a route mapped to a subclass gets a
fresh instance per connection, so per-connection data may live on ``self``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._presence_ws import close_presence, open_presence
from .exceptions import ConnectionClosed, PubSubError
from .recovery import SINCE, SUBPROTOCOL, message_frame, recovery_frame, since_from_query

if TYPE_CHECKING:  # pragma: no cover
    import webob

    from .connection import WebSocket
    from .pubsub.base import Message, PubSub
    from .pubsub.history import Position, Recovery

__all__ = ["WS", "PubSubWS"]

logger = logging.getLogger("wsmiddleware.handler")


class WS:
    """Base class of WebSocket handlers. Override the callbacks you need.

    All callbacks of one connection run in that connection's greenlet, in order.
    A callback that raises is logged and closes its connection with 1011.
    """

    #: Subprotocols this handler speaks, most preferred first.
    subprotocols: Sequence[str] = ()

    def on_handshake(self, request: webob.Request) -> Any:
        """Vet the opening handshake before the 101 is sent.

        What it may return or raise, and what the client gets:

        * ``None``: accept; the subprotocol is the first of :attr:`subprotocols`
          the client offered.
        * a ``str``: accept with that subprotocol, which must be one the client
          offered (``request.headers["Sec-WebSocket-Protocol"]``).
        * a WSGI response, returned or raised: reject with it as given (status,
          headers, body). ``webob.Response``, ``webob.exc.HTTPForbidden(...)``,
          Flask's ``abort(401)`` and ``flask.Response``, or any WSGI callable.
        * ``False``: reject with 403.
        * raise :class:`~wsmiddleware.HandshakeError`: reject with its status.

        Anything else (``True``, ``403``, a tuple, a subprotocol the client did
        not offer, ...) is a programming error: the handshake is refused with
        500 and logged at ERROR on ``wsmiddleware.handshake``, as is any other
        exception (with its traceback). The socket never opens on a mistake.

        Under gevent-websocket, which sends the 101 itself before the
        application runs, every refusal becomes a close with code 1008.

        ``request.urlvars`` holds the route's variables (``environ
        ["wsgiorg.routing_args"]``). ``request.environ["wsmiddleware.state"]``
        is a dict for what the connection should know: its content becomes the
        initial ``websocket.state`` (for instance the user authenticated here).
        """
        return None

    def on_open(self, websocket: WebSocket) -> None:
        """The connection is open; ``websocket.write`` may be used from now on."""

    def on_message(self, websocket: WebSocket, message: str) -> None:
        """A complete text message arrived."""

    def on_bytes(self, websocket: WebSocket, data: bytes) -> None:
        """A complete binary message arrived."""

    def on_ping(self, websocket: WebSocket, payload: bytes) -> None:
        """A ping arrived. Its pong is already on its way (RFC 6455 requires the
        answer; the protocol layer sends it, counted against ``send_queue_limit``)."""

    def on_pong(self, websocket: WebSocket, payload: bytes) -> None:
        """A pong arrived (answering ``websocket.ping()`` or unsolicited)."""

    def on_close(self, websocket: WebSocket) -> None:
        """The connection ended; called exactly once, with ``websocket.close_code`` set."""


#: Where PubSubWS keeps ``(channel, subscriber)`` in ``websocket.state``.
_PUBSUB_STATE = "wsmiddleware.pubsub"


class PubSubWS(WS):
    """Every connection subscribes to a channel; what a client sends is published to it.

    ``channel`` is a name (``"lobby"``), a template filled from the route's
    ``url_vars`` (``"room:{room}"`` on ``/ws/chat/{room}``), or a callable
    ``channel(websocket) -> str``. The channel is always subscribed to
    literally, never as a pattern, so a room named ``*`` is just that room.
    Text stays text and bytes stay bytes.

    ``echo``: whether the sender gets its own messages back (default: yes, it
    is a subscriber of the channel like the others).

    Hooks, given as arguments or overridden in a subclass, each returning the
    message (possibly changed) or ``None`` to drop it:

    * ``before_publish(websocket, channel, message)``: runs in the sender's
      connection, before publishing (authorise, validate, rewrite);
    * ``before_deliver(websocket, channel, message)``: runs once per
      recipient, before the write (filter per user, personalise). Without it,
      a message is encoded once for all recipients.

    A hook that raises closes that connection with 1011. A publish that fails
    (Redis down) goes to :meth:`publish_failed`, which logs it; the connection
    stays open. Subclasses overriding ``on_open``/``on_close`` (and
    ``on_handshake``) must call ``super()``.

    **Recovery.** A client that offers the subprotocol ``wsmiddleware.v1``
    gets every frame as a JSON envelope carrying the message's position in the
    channel's history, and may reconnect with ``?wsm_since=<epoch>:<offset>``
    to get what it missed, in order, exactly once, then the live messages; or
    an explicit "not recovered" when the gap is gone (protocol:
    :mod:`wsmiddleware.recovery`). Messages are positioned when the backend
    keeps history for the channel (``MemoryPubSub(history=N)``,
    ``RedisPubSub(url, history=N)``). Other clients get plain messages.
    ``before_deliver`` and ``echo=False`` apply to envelopes too. A subclass
    with its own ``subprotocols`` speaks only those (add ``SUBPROTOCOL`` to
    keep recovery); one whose ``on_handshake`` does not call ``super()``
    skips the 400 for a malformed ``wsm_since``: such a connection is closed
    with 1008 as it opens instead.

    **Presence.** ``presence=True``: every connection is a member of its
    channel while it is open (``pubsub.presence(channel)`` lists them, across
    processes with Redis), under a member id made per connection (uuid4 hex,
    in ``websocket.state["wsmiddleware.member"]``; an ``on_handshake`` may put
    its own there, which must then be unique per connection) with the info
    :meth:`presence_info` returns (or the ``presence_info(websocket)``
    argument). ``presence_events=True``: joins and leaves of this route's
    connections are announced on ``presence_channel(channel)`` and every
    connection gets them as text messages (format:
    :mod:`wsmiddleware.pubsub.presence`), its own join first, which tells the
    client its member id; without ``presence`` a connection only watches.
    """

    subprotocols: Sequence[str] = (SUBPROTOCOL,)

    def __init__(
        self,
        pubsub: PubSub,
        channel: str | Callable[[WebSocket], str],
        *,
        echo: bool = True,
        before_publish: Callable[[WebSocket, str, Message], Message | None] | None = None,
        before_deliver: Callable[[WebSocket, str, Message], Message | None] | None = None,
        presence: bool = False,
        presence_events: bool = False,
        presence_info: Callable[[WebSocket], Any] | None = None,
    ) -> None:
        self.pubsub = pubsub
        self.channel = channel
        self.echo = echo
        self.presence = presence
        self.presence_events = presence_events
        if presence_info is not None:
            self.presence_info = presence_info  # type: ignore[method-assign,assignment]
        if before_publish is not None:
            self.before_publish = before_publish  # type: ignore[method-assign,assignment]
        if before_deliver is not None:
            self.before_deliver = before_deliver  # type: ignore[method-assign,assignment]

    def channel_for(self, websocket: WebSocket) -> str:
        """The channel of ``websocket``, from the ``channel`` argument."""
        spec = self.channel
        if callable(spec):
            name = spec(websocket)
        elif "{" in spec:
            name = spec.format_map(websocket.url_vars)
        else:
            name = spec
        if not isinstance(name, str) or not name:
            raise ValueError(f"channel for {websocket!r} must be a non-empty str, not {name!r}")
        return name

    def before_publish(self, websocket: WebSocket, channel: str, message: Message) -> Message | None:
        """Vet what a client sent before it is published; ``None`` drops it."""
        return message

    def before_deliver(self, websocket: WebSocket, channel: str, message: Message) -> Message | None:
        """Vet a message before it is written to ``websocket``; ``None`` drops it."""
        return message

    def presence_info(self, websocket: WebSocket) -> Any:
        """The info of ``websocket`` as a member (JSON-serialisable); the default is
        ``websocket.state.get("presence")``, e.g. set in ``on_handshake`` with
        ``request.environ["wsmiddleware.state"]["presence"] = {"id": ..., "name": ...}``."""
        return websocket.state.get("presence")

    def publish_failed(self, websocket: WebSocket, message: Message, error: PubSubError) -> None:
        """A client's message could not be published; the default logs a warning."""
        logger.warning("%r: message not published: %s", websocket, error)

    def on_handshake(self, request: webob.Request) -> Any:
        try:
            since_from_query(request.GET.get(SINCE))
        except ValueError as exc:
            from webob.exc import HTTPBadRequest

            return HTTPBadRequest(str(exc))
        return None

    def on_open(self, websocket: WebSocket) -> None:
        channel = self.channel_for(websocket)
        open_presence(self, websocket, channel)
        filtered = "before_deliver" in self.__dict__ or type(self).before_deliver is not PubSubWS.before_deliver
        if websocket.subprotocol == SUBPROTOCOL:
            self._resume(websocket, channel, filtered)
            return
        subscriber: Any = _FilteredDelivery(self, websocket) if filtered else websocket
        websocket.state[_PUBSUB_STATE] = (channel, subscriber)
        self.pubsub.subscribe(channel, subscriber, pattern=False)

    def _resume(self, websocket: WebSocket, channel: str, filtered: bool) -> None:
        try:
            since = since_from_query(websocket.request.GET.get(SINCE))
        except ValueError as exc:  # an on_handshake override skipped the check
            websocket.close(1008, str(exc)[:120])
            return
        subscriber = _Envelopes(self if filtered else None, websocket)
        websocket.state[_PUBSUB_STATE] = (channel, subscriber)
        try:
            recovery = self.pubsub.resume(channel, subscriber, since)
        except PubSubError as exc:
            from .pubsub.history import Position, Recovery

            logger.warning("%r: history of %r unavailable, not recovered: %s", websocket, channel, exc)
            self.pubsub.subscribe(channel, subscriber, pattern=False)
            recovery = Recovery(None if since is None else False, Position("", 0), 0)
        subscriber.start(channel, recovery)

    def on_message(self, websocket: WebSocket, message: str) -> None:
        self._publish(websocket, message)

    def on_bytes(self, websocket: WebSocket, data: bytes) -> None:
        self._publish(websocket, data)

    def on_close(self, websocket: WebSocket) -> None:
        close_presence(self, websocket)
        entry = websocket.state.pop(_PUBSUB_STATE, None)
        if entry is not None:
            channel, subscriber = entry
            self.pubsub.unsubscribe(channel, subscriber, pattern=False)

    def _publish(self, websocket: WebSocket, message: Message) -> None:
        entry = websocket.state.get(_PUBSUB_STATE)
        if entry is None:
            return
        channel, subscriber = entry
        vetted = self.before_publish(websocket, channel, message)
        if vetted is None:
            return
        try:
            self.pubsub.publish(channel, vetted, sender=None if self.echo else subscriber)
        except PubSubError as exc:
            self.publish_failed(websocket, vetted, exc)


class _FilteredDelivery:
    """The subscriber standing for a websocket when ``before_deliver`` applies."""

    __slots__ = ("handler", "websocket")

    def __init__(self, handler: PubSubWS, websocket: WebSocket) -> None:
        self.handler = handler
        self.websocket = websocket

    def __repr__(self) -> str:
        return f"<delivery to {self.websocket!r}>"

    def __call__(self, channel: str, message: Message) -> None:
        websocket = self.websocket
        if websocket.closed:
            return
        vetted = _vet(self.handler, websocket, channel, message)
        if vetted is None:
            return
        try:
            websocket.write(vetted)
        except ConnectionClosed:
            pass


def _vet(handler: PubSubWS, websocket: WebSocket, channel: str, message: Message) -> Message | None:
    try:
        return handler.before_deliver(websocket, channel, message)
    except Exception:
        logger.exception("%s.before_deliver raised; closing %r with 1011", type(handler).__name__, websocket)
        websocket.close(1011, "internal error")
        return None


class _Envelopes:
    """The subscriber standing for a ``wsmiddleware.v1`` client: writes JSON envelopes.

    It holds what arrives until :meth:`start` has written the recovery frame:
    ``resume`` hands over the replay and then the live messages, in order, each
    once, before it returns with the answer that must go first; held messages
    follow it in the order they came, and nothing can slip in between (writes
    queue, they never switch greenlets).
    """

    positioned = True
    __slots__ = ("handler", "websocket", "held")
    #: (message, position, channel, envelope) of the last message encoded: one
    #: encoding per message for all its subscribers, however many.
    _last: tuple[Any, Any, Any, str] = (None, None, None, "")

    def __init__(self, handler: PubSubWS | None, websocket: WebSocket) -> None:
        self.handler = handler
        self.websocket = websocket
        self.held: list[tuple[str, Message, Position | None]] | None = []

    def __repr__(self) -> str:
        return f"<envelopes to {self.websocket!r}>"

    def __call__(self, channel: str, message: Message, position: Position | None = None) -> None:
        if self.held is not None:
            self.held.append((channel, message, position))
        else:
            self._write(channel, message, position)

    def start(self, channel: str, recovery: Recovery) -> None:
        try:
            self.websocket.write(recovery_frame(channel, recovery))
        except ConnectionClosed:
            pass
        held, self.held = self.held or [], None
        for item in held:
            self._write(*item)

    def _write(self, channel: str, message: Message, position: Position | None) -> None:
        websocket = self.websocket
        if websocket.closed:
            return
        if self.handler is not None:
            vetted = _vet(self.handler, websocket, channel, message)
            if vetted is None:
                return
            message = vetted
        last = _Envelopes._last
        if last[0] is message and last[1] == position and last[2] == channel:
            envelope = last[3]
        else:
            envelope = message_frame(channel, message, position)
            _Envelopes._last = (message, position, channel, envelope)
        try:
            websocket.write(envelope)
        except ConnectionClosed:
            pass
