"""Presence: who is on a channel, across every process sharing a backend.

A **member** is a non-empty ``str`` id (``PubSubWS`` makes one per connection,
a uuid4 hex) with an **info**: any JSON-serialisable value (the user's id and
name, say), checked when the member joins. ``PubSub.join`` / ``leave`` /
``presence`` keep them (see :class:`~wsmiddleware.pubsub.PubSub`); a member
belongs to the process that joined it, and only that process can make it
leave (through Redis, its members expire when that process dies).

**Events.** ``join(..., announce=True)`` and ``leave(..., announce=True)``
publish an ordinary text message on the side channel
``presence_channel(channel)`` (``"wsm.presence:" + channel``), one JSON object::

    {"type": "join", "channel": "room:lobby", "member": "3f2a...", "info": {"name": "Ann"}}
    {"type": "leave", "channel": "room:lobby", "member": "3f2a...", "info": {"name": "Ann"}}

``info`` is the member's info (on a leave: the one it had). A leave of a member
that is not there announces nothing; joining again (new info) announces a join
again. Subscribe to the side channel like to any other (a WebSocket, an
``Inbox``-style callable, another process through Redis). Events are
announcements, not a log: a subscriber that was away (or a Redis outage) misses
some; :meth:`PubSub.presence` is the truth.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["PRESENCE_PREFIX", "presence_channel", "encode_info", "event", "check_member"]

#: The prefix of the side channels that carry join/leave events.
PRESENCE_PREFIX = "wsm.presence:"


def presence_channel(channel: str) -> str:
    """The side channel on which the join/leave events of ``channel`` are published."""
    if type(channel) is not str or not channel:
        raise TypeError(f"a channel is a non-empty str, not {channel!r}")
    return PRESENCE_PREFIX + channel


def check_member(member: Any) -> str:
    if type(member) is not str or not member:
        raise TypeError(f"a presence member is a non-empty str, not {member!r}")
    return member


def encode_info(info: Any) -> str:
    """``info`` as compact JSON; anything JSON cannot carry (NaN included) is a ``TypeError``."""
    try:
        return json.dumps(info, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:  # ValueError: NaN, infinities, circular references
        raise TypeError(f"presence info must be JSON-serialisable: {exc}") from None


def event(kind: str, channel: str, member: str, info: str) -> str:
    """The text of a join/leave event (``info`` is already JSON: it is spliced in, not re-encoded)."""
    return (f'{{"type":"{kind}","channel":{json.dumps(channel)},"member":{json.dumps(member)},'
            f'"info":{info}}}')
