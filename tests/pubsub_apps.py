"""The pub/sub test application, served in child processes (pywsgi or gunicorn).

``WSM_TEST_REDIS_URL`` selects :class:`RedisPubSub`; without it the app uses
:class:`MemoryPubSub`. HTTP endpoints let the tests publish from "an ordinary
view", read this process's counters and prove which worker answered.
"""

from __future__ import annotations

import json
import os

import gevent
import webob

from wsmiddleware import PubSubError, PubSubWS, WebSocketMiddleware
from wsmiddleware.pubsub import MemoryPubSub, RedisPubSub
from wsmiddleware.registry import server_connections as live_connections

REDIS_URL = os.environ.get("WSM_TEST_REDIS_URL")
if REDIS_URL:
    pubsub = RedisPubSub(REDIS_URL, reconnect_delay=0.05, max_reconnect_delay=0.5, socket_timeout=2.0)
else:
    pubsub = MemoryPubSub()

#: (path, close_code, close_reason, dropped) of every connection that ended here.
CLOSED: list[list] = []


class Room(PubSubWS):
    """PubSubWS that, with ``?hello=1``, first says which process serves it."""

    def on_open(self, websocket):
        super().on_open(websocket)
        if websocket.request.GET.get("hello"):
            websocket.write(json.dumps({"hello": os.getpid(), "channel": self.channel_for(websocket)}))

    def on_close(self, websocket):
        super().on_close(websocket)
        CLOSED.append([websocket.path, websocket.close_code, websocket.close_reason, websocket.dropped])


def vet_publish(websocket, channel, message):
    if message == "drop me":
        return None
    if message == "raise":
        raise RuntimeError("before_publish raised, as the test asked")
    if isinstance(message, str) and message.startswith("shout "):
        return message[len("shout "):].upper()
    return message


def vet_deliver(websocket, channel, message):
    name = websocket.request.GET.get("name", "")
    if isinstance(message, str):
        if message.startswith("secret ") and name != "boss":
            return None
        if message == "explode" and name == "fragile":
            raise RuntimeError("before_deliver raised, as the test asked")
        return message.replace("{you}", name)
    return message


def user_channel(websocket):
    return "user:" + websocket.request.GET["user"]


SLOW_OPTIONS = {"send_queue_limit": 64 * 1024, "ping_interval": None, "close_timeout": 10.0, "compression": None}


def _json(data, status=200):
    return webob.Response(json.dumps(data).encode(), status=status, content_type="application/json")


def _message_from(request):
    if "hex" in request.GET:
        return bytes.fromhex(request.GET["hex"])
    return request.GET.get("text", "")


def views(environ, start_response):
    request = webob.Request(environ)
    path = request.path_info
    if path == "/pid":
        response = _json({"pid": os.getpid()})
    elif path == "/publish":
        channel = request.GET["channel"]
        try:
            receivers = pubsub.publish(channel, _message_from(request))
            response = _json({"ok": True, "receivers": receivers, "pid": os.getpid()})
        except PubSubError as exc:
            response = _json({"ok": False, "type": type(exc).__name__, "error": str(exc), "pid": os.getpid()}, 503)
    elif path == "/publish-many":
        channel = request.GET["channel"]
        count = int(request.GET.get("count", "100"))
        size = int(request.GET.get("size", "0"))
        interval = float(request.GET.get("interval", "0"))
        start = int(request.GET.get("start", "0"))
        padding = "x" * size
        for i in range(start, start + count):
            pubsub.publish(channel, f"{i}:{padding}")
            gevent.sleep(interval)
        response = _json({"ok": True, "count": count})
    elif path == "/stats":
        response = _json({
            "pid": os.getpid(),
            "subscriptions": pubsub.subscription_count(),
            "connections": sorted([ws.path, ws.dropped, ws.closed] for ws in live_connections()),
            "closed": CLOSED,
            "connected": getattr(pubsub, "connected", None),
        })
    else:
        response = webob.Response("pub/sub test app\n", content_type="text/plain")
    return response(environ, start_response)


application = WebSocketMiddleware(views, {
    "/ws/room/{room}": Room(pubsub, "room:{room}"),
    "/ws/quiet/{room}": Room(pubsub, "room:{room}", echo=False),
    "/ws/vetted/{room}": Room(pubsub, "vetted:{room}", before_publish=vet_publish, before_deliver=vet_deliver),
    "/ws/user": Room(pubsub, user_channel),
    "/ws/slow/{room}": (Room(pubsub, "room:{room}"), SLOW_OPTIONS),
    "/ws/slowdrop/{room}": (Room(pubsub, "room:{room}"), {**SLOW_OPTIONS, "slow_consumer": "drop"}),
}, allowed_origins=["*"])
