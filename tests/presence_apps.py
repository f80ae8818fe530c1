"""The presence test application, served in child processes (pywsgi or gunicorn).

``WSM_TEST_REDIS_URL`` selects :class:`RedisPubSub` (``WSM_TEST_PRESENCE_TTL``:
its ``presence_ttl``, default 2 s); without it the app uses :class:`MemoryPubSub`.
HTTP views read presence and join/leave from "an ordinary view".
"""

from __future__ import annotations

import json
import os
import uuid

import webob

from wsmiddleware import PubSubError, PubSubWS, WebSocketMiddleware
from wsmiddleware.pubsub import MemoryPubSub, RedisPubSub

REDIS_URL = os.environ.get("WSM_TEST_REDIS_URL")
TTL = float(os.environ.get("WSM_TEST_PRESENCE_TTL", "2"))
if REDIS_URL:
    pubsub = RedisPubSub(REDIS_URL, reconnect_delay=0.05, max_reconnect_delay=0.5, socket_timeout=2.0,
                         presence_ttl=TTL)
else:
    pubsub = MemoryPubSub()


class Members(PubSubWS):
    """Info ``{"name": ?name}``; with ``?hello=1`` says first which process serves it and its member id
    (None with presence events: the hello then comes before the own join, which has it)."""

    def on_handshake(self, request):
        refused = super().on_handshake(request)
        if refused is not None:
            return refused
        state = request.environ["wsmiddleware.state"]
        state["presence"] = {"name": request.GET.get("name", "")}
        if request.GET.get("own_id"):
            state["wsmiddleware.member"] = "own-" + uuid.uuid4().hex
        return None

    def on_open(self, websocket):
        hello = websocket.request.GET.get("hello")
        if hello and self.presence_events:
            # Before joining: the hello comes before any presence event (the member id is in the own join).
            websocket.write(json.dumps({"hello": os.getpid(), "member": websocket.state.get("wsmiddleware.member")}))
        super().on_open(websocket)
        if hello and not self.presence_events:
            websocket.write(json.dumps({"hello": os.getpid(), "member": websocket.state.get("wsmiddleware.member")}))


def custom_info(websocket):
    if websocket.request.GET.get("bad"):
        return {"not json": object()}
    return {"custom": websocket.request.GET.get("name", ""), "path": websocket.path}


def _json(data, status=200):
    return webob.Response(json.dumps(data).encode(), status=status, content_type="application/json")


def views(environ, start_response):
    request = webob.Request(environ)
    path = request.path_info
    try:
        if path == "/pid":
            response = _json({"pid": os.getpid()})
        elif path == "/presence":
            response = _json({"pid": os.getpid(), "members": pubsub.presence(request.GET["channel"])})
        elif path == "/join":
            pubsub.join(request.GET["channel"], request.GET["member"], {"name": request.GET.get("name", "")},
                        announce=True)
            response = _json({"ok": True, "pid": os.getpid()})
        elif path == "/leave":
            pubsub.leave(request.GET["channel"], request.GET["member"], announce=True)
            response = _json({"ok": True, "pid": os.getpid()})
        else:
            response = webob.Response("presence test app\n", content_type="text/plain")
    except PubSubError as exc:
        response = _json({"ok": False, "error": str(exc), "pid": os.getpid()}, 503)
    return response(environ, start_response)


application = WebSocketMiddleware(views, {
    "/ws/members/{room}": Members(pubsub, "room:{room}", presence=True),
    "/ws/watch/{room}": Members(pubsub, "room:{room}", presence=True, presence_events=True),
    "/ws/observe/{room}": Members(pubsub, "room:{room}", presence_events=True),
    "/ws/custom/{room}": Members(pubsub, "room:{room}", presence=True, presence_info=custom_info),
})
