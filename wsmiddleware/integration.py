"""Where a web framework steps in: around the handshake and around each callback.

A framework integration (:mod:`wsmiddleware.flask`, :mod:`wsmiddleware.django`)
is an :class:`Integration` given to
:class:`~wsmiddleware.WebSocketMiddleware` as ``integration=``. It decides what
surrounds the user's code, as the framework does around a view: a request
context for ``on_handshake``, an application context and the closing of stale
database connections for the callbacks. Without one, callbacks are called
directly (the hot path pays one ``is None`` test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import webob

    from .connection import WebSocket

__all__ = ["Integration"]


class Integration:
    """Base class of framework integrations; the defaults add nothing.

    Both methods run in the greenlet of the connection concerned and must call
    what they are given exactly once (or not at all, for ``handshake``, to
    answer in its place), letting its exceptions through: the engine applies
    the handshake contract and the 1011 rule to them.
    """

    def handshake(self, request: webob.Request, on_handshake: Callable[[webob.Request], Any]) -> Any:
        """Run ``on_handshake(request)`` and return its answer (see :meth:`WS.on_handshake`).

        It may instead return or raise a WSGI response, which is the
        rejection, as ``on_handshake`` itself may.
        """
        return on_handshake(request)

    def callback(self, websocket: WebSocket, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(websocket, *args)``: ``on_open``, ``on_message``, ... ``on_close``."""
        callback(websocket, *args)
