"""The recovery application across workers: gunicorn -k gevent -w 2 with RedisPubSub
(``WSM_TEST_REDIS_URL``) and a history of 5,000 messages on ``/ws/h/{room}``, 10
on ``/ws/small/{room}``.

Each connection first gets ``{"type": "hello", "pid": N}`` (a frame type the
recovery protocol passes through), so a test knows which worker to kill.
"""

from __future__ import annotations

import json
import os

import webob

from wsmiddleware import PubSubWS, WebSocketMiddleware
from wsmiddleware.pubsub import RedisPubSub

pubsub = RedisPubSub(os.environ["WSM_TEST_REDIS_URL"], history={"small:*": 10, "*": 5000}, reconnect_delay=0.05,
                     max_reconnect_delay=0.5, socket_timeout=2.0)


class Hello(PubSubWS):
    def on_open(self, websocket):
        websocket.write(json.dumps({"type": "hello", "pid": os.getpid()}))
        super().on_open(websocket)


def wsgi_app(environ, start_response):
    return webob.Response(f"{os.getpid()}\n", content_type="text/plain")(environ, start_response)


application = WebSocketMiddleware(wsgi_app, {
    "/ws/h/{room}": Hello(pubsub, channel="h:{room}"),
    "/ws/small/{room}": Hello(pubsub, channel="small:{room}"),
})
