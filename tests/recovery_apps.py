"""The recovery test application (pywsgi or gunicorn, one process, MemoryPubSub).

``/ws/h/{room}``: history of 50 messages; ``/ws/plain/{room}``: a backend without
history; ``/ws/vetted/{room}``: history and a ``before_deliver`` that upper-cases;
``/ws/own/{room}``: an ``on_handshake`` override without ``super()``;
``/ws/chat/{room}``: a subclass with its own ``subprotocols``.
``/publish?channel=C&count=N&start=S`` publishes ``S``..``S+N-1`` as text
(``&binary=1``: as 2-byte big-endian binary), ``&pause=s`` between messages.
``/drop?code=N`` closes every open ``/ws/h`` connection with code N (the server
stays up: a forced reconnect); ``/count`` says how many are open;
``/gate?status=N`` makes ``/ws/h`` handshakes answer N (``status=0``: accept again).
"""

from __future__ import annotations

import gevent
import webob

from wsmiddleware import PubSubWS, WebSocketMiddleware
from wsmiddleware.pubsub import MemoryPubSub

history = MemoryPubSub(history=50)
plain = MemoryPubSub()


OPEN: set = set()
GATE = {"status": 0}


class Tracked(PubSubWS):
    def on_handshake(self, request):
        if GATE["status"]:
            return webob.Response(f"gated with {GATE['status']}\n", status=GATE["status"])
        return super().on_handshake(request)

    def on_open(self, websocket):
        OPEN.add(websocket)
        super().on_open(websocket)

    def on_close(self, websocket):
        OPEN.discard(websocket)
        super().on_close(websocket)


class OwnHandshake(PubSubWS):
    """Overrides on_handshake without super(): the wsm_since check moves to on_open."""

    def on_handshake(self, request):
        return None


class OwnSubprotocol(PubSubWS):
    subprotocols = ("chat",)


def upper(websocket, channel, message):
    return message.upper() if isinstance(message, str) else message


def wsgi_app(environ, start_response):
    request = webob.Request(environ)
    if request.path == "/drop":
        code = int(request.GET.get("code", 1012))
        for websocket in list(OPEN):
            websocket.close(code, "dropped by the test")
        return webob.Response(f"dropped {len(OPEN)}\n")(environ, start_response)
    if request.path == "/gate":
        GATE["status"] = int(request.GET["status"])
        return webob.Response("ok\n")(environ, start_response)
    if request.path == "/count":
        return webob.Response(f"{len(OPEN)}\n")(environ, start_response)
    if request.path == "/publish":
        backend = plain if request.GET.get("plain") else history
        channel = request.GET["channel"]
        start = int(request.GET.get("start", 1))
        count = int(request.GET.get("count", 1))
        pause = float(request.GET.get("pause", 0))
        for i in range(start, start + count):
            backend.publish(channel, i.to_bytes(2, "big") if request.GET.get("binary") else f"m{i}")
            if pause:
                gevent.sleep(pause)
        response = webob.Response(f"published {count}\n", content_type="text/plain")
    else:
        response = webob.Response("not found\n", status=404, content_type="text/plain")
    return response(environ, start_response)


application = WebSocketMiddleware(wsgi_app, {
    "/ws/h/{room}": Tracked(history, channel="h:{room}"),
    "/ws/plain/{room}": PubSubWS(plain, channel="p:{room}"),
    "/ws/vetted/{room}": PubSubWS(history, channel="v:{room}", before_deliver=upper),
    "/ws/quiet/{room}": PubSubWS(history, channel="h:{room}", echo=False),
    "/ws/own/{room}": OwnHandshake(history, channel="h:{room}"),
    "/ws/chat/{room}": OwnSubprotocol(history, channel="h:{room}"),
})
