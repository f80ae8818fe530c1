"""Presence for :class:`~wsmiddleware.PubSubWS` connections: join on open, leave on close.

Kept apart from ``handler.py`` so that the handler only calls in at the end
of opening and at the start of closing. See ``PubSubWS`` for the options.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from .pubsub.presence import presence_channel

if TYPE_CHECKING:  # pragma: no cover
    from .connection import WebSocket
    from .handler import PubSubWS

logger = logging.getLogger("wsmiddleware.pubsub.presence")

#: ``websocket.state`` key of the connection's member id (public: handlers may read it).
MEMBER = "wsmiddleware.member"
#: ``websocket.state`` key of what to undo at close: [channel, member or None, events subscribed].
_JOINED = "wsmiddleware.presence.joined"


def open_presence(handler: PubSubWS, websocket: WebSocket, channel: str) -> None:
    """Subscribe to the events (``presence_events``), then join (``presence``).

    In that order, so that the connection's own join is the first event it
    gets: it tells the client its member id and info.
    """
    if not (handler.presence or handler.presence_events):
        return
    entry: list[Any] = [channel, None, False]
    # Noted before anything can fail: on_close undoes exactly what was done.
    websocket.state[_JOINED] = entry
    if handler.presence_events:
        handler.pubsub.subscribe(presence_channel(channel), websocket, pattern=False)
        entry[2] = True
    if handler.presence:
        member = websocket.state.get(MEMBER)
        if not member:
            member = websocket.state[MEMBER] = uuid.uuid4().hex
        info = handler.presence_info(websocket)
        handler.pubsub.join(channel, member, info, announce=handler.presence_events)
        entry[1] = member


def close_presence(handler: PubSubWS, websocket: WebSocket) -> None:
    """Undo :func:`open_presence`, once (the entry is popped); never raises."""
    entry = websocket.state.pop(_JOINED, None)
    if entry is None:
        return
    channel, member, events = entry
    pubsub = handler.pubsub
    # Each step on its own: on_close must go on (the channel subscription is undone after this).
    if events:
        try:
            pubsub.unsubscribe(presence_channel(channel), websocket, pattern=False)
        except Exception:
            logger.exception("%r: unsubscribing from the presence events of %r failed", websocket, channel)
    if member is not None:
        try:
            pubsub.leave(channel, member, announce=handler.presence_events)
        except Exception:
            logger.exception("%r: leaving the presence of %r failed", websocket, channel)
