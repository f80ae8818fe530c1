"""The recovery protocol of :class:`~wsmiddleware.PubSubWS`: how a client says where
it was, and how positions travel with messages (pure; used by both ends).

A client that wants to recover missed messages offers the subprotocol
``wsmiddleware.v1`` (:data:`SUBPROTOCOL`). On a reconnect it adds the query
parameter ``wsm_since=<epoch>:<offset>`` (:data:`SINCE`), the position of the
last message it received (browsers cannot set headers; a query survives every
proxy). A malformed position is refused with 400.

Once the server has picked ``wsmiddleware.v1``, every frame it sends is one JSON
object (a text frame):

* first, always: ``{"type": "recovery", "channel": C, "recovered": R, "epoch":
  E, "offset": N}``. ``R`` is ``true`` when every missed message follows,
  ``false`` when the gap could not be filled (the history was lost: another
  epoch; or it is older than what the channel keeps; or the channel has no
  history) and the application should resynchronise, ``null`` when no
  ``wsm_since`` was given. ``E``/``N``: the client's position once the replay
  is done (epoch ``""`` and offset 0 on a channel without history);
* then each message, replayed ones first, in order, each once:
  ``{"type": "message", "channel": C, "epoch": E, "offset": N, "data": T}``,
  with ``"data_b64"`` (base64) instead of ``"data"`` for a binary message;
  ``epoch`` and ``offset`` are ``null`` on a channel without history.

Other ``type`` values may follow in later versions (presence events); a client
passes on what it does not know. What the client sends stays plain: text and
binary messages, published as they are. Clients that do not offer the
subprotocol get plain messages, as before.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .pubsub.base import Message
from .pubsub.history import Position, Recovery

__all__ = ["SUBPROTOCOL", "SINCE", "since_from_query", "recovery_frame", "message_frame", "parse_frame"]

SUBPROTOCOL = "wsmiddleware.v1"
SINCE = "wsm_since"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def since_from_query(value: str | None) -> Position | None:
    """The position a client gave in ``wsm_since`` (None if absent); ``ValueError`` if malformed."""
    if value is None or value == "":
        return None
    return Position.parse(value)


def recovery_frame(channel: str, recovery: Recovery) -> str:
    return _dumps({
        "type": "recovery", "channel": channel, "recovered": recovery.recovered,
        "epoch": recovery.position.epoch, "offset": recovery.position.offset,
    })


def message_frame(channel: str, message: Message, position: Position | None) -> str:
    frame: dict[str, Any] = {"type": "message", "channel": channel}
    if position is None:
        frame["epoch"] = frame["offset"] = None
    else:
        frame["epoch"], frame["offset"] = position
    if isinstance(message, str):
        frame["data"] = message
    else:
        frame["data_b64"] = base64.b64encode(message).decode("ascii")
    return _dumps(frame)


def parse_frame(text: str) -> dict[str, Any]:
    """A server frame as a dict, with ``"data"`` decoded (bytes for ``data_b64``) and
    ``"position"`` (a :class:`Position` or None) on messages; ``ValueError`` if it is
    not one of this protocol's objects."""
    frame = json.loads(text)
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ValueError("not a wsmiddleware.v1 frame")
    if frame["type"] == "message":
        if "data_b64" in frame:
            frame["data"] = base64.b64decode(frame.pop("data_b64"))
        epoch, offset = frame.get("epoch"), frame.get("offset")
        frame["position"] = Position(epoch, offset) if isinstance(epoch, str) and isinstance(offset, int) else None
    elif frame["type"] == "recovery":
        epoch, offset = frame.get("epoch"), frame.get("offset")
        frame["position"] = Position(epoch, offset) if epoch and isinstance(offset, int) else None
    return frame
