"""Message routing: JSON messages dispatched by their ``type`` to handler methods.

REST-over-WebSocket frameworks route on message content the way URL routers
route on paths. Here a :class:`MessageRouter` subclass marks methods with
:func:`on`; each text message is decoded as a JSON object and handed to the
method registered for its ``type``::

    class Chat(MessageRouter):
        @on("join")
        def join(self, websocket, message):
            websocket.state["room"] = message["room"]
            return {"joined": message["room"]}

The wire protocol (field names are class attributes):

* request: ``{"type": "join", "id": 7, ...}``; ``id`` (a string or an integer) is optional.
* reply, only when the request had an ``id``: ``{"type": "result", "id": 7, "result": <return value>}``.
* error, always (``id`` is ``null`` when unknown): ``{"type": "error", "id": 7,
  "error": {"code": "...", "message": "..."}}`` with code ``bad_json``,
  ``bad_message``, ``unknown_type``, ``internal_error``, or the code of a
  :class:`MessageError` the method raised.

One bad message gets an error reply and nothing more: the connection stays open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .exceptions import ConnectionClosed
from .handler import WS

if TYPE_CHECKING:  # pragma: no cover
    from .connection import WebSocket

__all__ = ["MessageRouter", "MessageError", "on"]

logger = logging.getLogger("wsmiddleware.rpc")

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "_wsm_message_types"


def on(*types: str) -> Callable[[F], F]:
    """Register the decorated method for messages of the given ``type`` value(s).

    The method is called as ``method(websocket, message)`` with the decoded
    message (a dict); its return value is the ``result`` of the reply.
    """
    if not types or not all(isinstance(t, str) and t for t in types):
        raise TypeError("on() needs one or more non-empty message type names")

    def mark(method: F) -> F:
        setattr(method, _MARK, getattr(method, _MARK, ()) + types)
        return method

    return mark


class MessageError(Exception):
    """Raise from a handler method to answer with a structured error.

    ``code`` is a short machine-readable string, ``message`` is for humans,
    ``data`` (JSON-serialisable) is added to the error object when given.
    """

    def __init__(self, message: str, code: str = "bad_request", data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data


class MessageRouter(WS):
    """A :class:`WS` handler that routes JSON messages to methods marked with :func:`on`."""

    #: Field naming the message type, used for dispatch.
    type_field = "type"
    #: Field correlating a request and its reply.
    id_field = "id"
    #: ``type`` of successful replies and of error replies.
    result_type = "result"
    error_type = "error"

    #: Message type -> method name, collected from the class and its bases.
    _routes: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        routes: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                for message_type in getattr(value, _MARK, ()):
                    routes[message_type] = name
        cls._routes = routes

    @classmethod
    def message_types(cls) -> list[str]:
        """The message types this router handles."""
        return sorted(cls._routes)

    # -- encoding (override to use another JSON library) ------------------------

    def loads(self, text: str) -> Any:
        """Decode one message."""
        return json.loads(text)

    def dumps(self, value: Any) -> str:
        """Encode one message."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    # -- sending ------------------------------------------------------------------

    def emit(self, websocket: WebSocket, message_type: str, **fields: Any) -> None:
        """Push an event to the peer: ``{"type": message_type, **fields}``."""
        websocket.write(self.dumps({self.type_field: message_type, **fields}))

    def reply(self, websocket: WebSocket, message_id: Any, result: Any) -> None:
        """Send the successful reply to the request with ``message_id``."""
        websocket.write(self.dumps({self.type_field: self.result_type, self.id_field: message_id, "result": result}))

    def reply_error(self, websocket: WebSocket, message_id: Any, code: str, message: str, data: Any = None) -> None:
        """Send an error reply; ``message_id`` is ``None`` when the request's is unknown."""
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        websocket.write(self.dumps({self.type_field: self.error_type, self.id_field: message_id, "error": error}))

    # -- dispatch -----------------------------------------------------------------

    def on_message(self, websocket: WebSocket, text: str) -> None:
        try:
            message = self.loads(text)
        except ValueError as exc:
            self.reply_error(websocket, None, "bad_json", f"message is not valid JSON: {exc}")
            return
        if not isinstance(message, dict):
            self.reply_error(websocket, None, "bad_message", "message must be a JSON object")
            return
        message_id = message.get(self.id_field)
        if message_id is not None and (isinstance(message_id, bool) or not isinstance(message_id, (str, int))):
            self.reply_error(websocket, None, "bad_message", f"{self.id_field!r} must be a string or an integer")
            return
        message_type = message.get(self.type_field)
        if not isinstance(message_type, str) or not message_type:
            self.reply_error(websocket, message_id, "bad_message", f"message needs a string {self.type_field!r} field")
            return
        name = self._routes.get(message_type)
        if name is None:
            self.unknown(websocket, message, message_id, message_type)
            return
        self._invoke(websocket, getattr(self, name), message, message_id, message_type)

    def _invoke(self, websocket: WebSocket, method: Callable[..., Any], message: dict[str, Any],
                message_id: Any, message_type: str) -> None:
        try:
            result = method(websocket, message)
            if message_id is None:
                return
            encoded = self.dumps({self.type_field: self.result_type, self.id_field: message_id, "result": result})
        except ConnectionClosed:
            raise
        except MessageError as exc:
            self.reply_error(websocket, message_id, exc.code, exc.message, exc.data)
            return
        except Exception:
            logger.exception("%s: handler for %r raised", type(self).__name__, message_type)
            self.reply_error(websocket, message_id, "internal_error", f"the {message_type!r} handler failed")
            return
        websocket.write(encoded)

    def unknown(self, websocket: WebSocket, message: dict[str, Any], message_id: Any, message_type: str) -> None:
        """A message whose type no method handles; the default answers ``unknown_type``."""
        self.reply_error(
            websocket, message_id, "unknown_type", f"unknown message type {message_type!r}",
            {"known": self.message_types()},
        )

    def on_bytes(self, websocket: WebSocket, data: bytes) -> None:
        """Binary messages carry no JSON here; the default answers ``bad_message``."""
        self.reply_error(websocket, None, "bad_message", "binary messages are not supported; send JSON text")
