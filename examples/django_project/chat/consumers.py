"""The WebSocket side of the chat: one channel per room, messages stored with the ORM.

Mounted by ``settings.WSMIDDLEWARE["ROUTES"]`` as ``"/ws/chat/{room}": "chat.consumers.chat"``.
"""

import json

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils.text import slugify

from wsmiddleware import PubSubWS
from wsmiddleware.pubsub import MemoryPubSub

from .models import Message

HISTORY = 20

#: One process; RedisPubSub("redis://...") shares rooms between gunicorn workers.
pubsub = MemoryPubSub()


class ChatWS(PubSubWS):
    def on_handshake(self, request):
        # request is Django's HttpRequest, after SessionMiddleware and AuthenticationMiddleware.
        if not request.user.is_authenticated:
            raise PermissionDenied("log in to chat")  # the project's 403 page
        room = request.resolver_match.kwargs["room"]
        if slugify(room) != room or len(room) > 50:
            raise Http404("no such room")

    def on_open(self, websocket):
        super().on_open(websocket)  # subscribes to the room's channel
        recent = Message.objects.filter(room=websocket.url_vars["room"]).select_related("author").order_by("-pk")
        for message in reversed(recent[:HISTORY]):
            websocket.write(json.dumps(message.as_json()))

    def before_publish(self, websocket, channel, message):
        """Store what a user sends and publish it with its author (websocket.state["user"])."""
        if not isinstance(message, str) or not message.strip():
            return None
        stored = Message.objects.create(room=websocket.url_vars["room"], author=websocket.state["user"],
                                        text=message.strip()[:2000])
        return json.dumps(stored.as_json())


chat = ChatWS(pubsub, channel="room:{room}")
