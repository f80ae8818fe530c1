"""Chat with rooms: one page, one PubSubWS route, in-memory or Redis pub/sub.

    python examples/chat.py [--host 127.0.0.1] [--port 8000]

Then open http://127.0.0.1:8000/ in two browser tabs. That runs one process with
the in-memory backend. With Redis, any number of workers and hosts share the rooms:

    WSM_REDIS_URL=redis://127.0.0.1:6379/0 gunicorn -k gevent -w 4 examples.chat:application

Anything on the server can talk to a room too, for instance an ordinary view
(``POST /announce?room=lobby`` with the text as body) or ``redis-cli PUBLISH
chat:lobby "hello from redis-cli"`` (plain text arrives as a system line).
"""

from __future__ import annotations

import json
import os
import re
import time

import webob
import webob.exc

from wsmiddleware import PubSubError, PubSubWS, WebSocketMiddleware
from wsmiddleware.pubsub import MemoryPubSub, PubSub

ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
MAX_TEXT = 2000

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>wsmiddleware chat</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 42em; }
#log { border: 1px solid #ccc; height: 24em; overflow-y: auto; padding: .5em; white-space: pre-wrap; }
.sys { color: #777; font-style: italic; } .me b { color: #06c; }
form { margin: .5em 0; display: flex; gap: .5em; } #text { flex: 1; }
</style>
<h1>Chat <small id="where"></small></h1>
<form id="join">
  <input id="name" placeholder="your name" required maxlength="32">
  <input id="room" placeholder="room" value="lobby" required pattern="[A-Za-z0-9_-]{1,32}">
  <button>Join</button>
</form>
<div id="log"></div>
<form id="say"><input id="text" autocomplete="off" placeholder="message" disabled> <button>Send</button></form>
<script>
const $ = (id) => document.getElementById(id);
let ws = null, me = "";
function line(html, cls) {
  const div = document.createElement("div");
  if (cls) div.className = cls;
  div.innerHTML = html;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
}
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
function show(event) {
  if (event.type === "message") line("<b>" + esc(event.name) + "</b>: " + esc(event.text), event.name === me ? "me" : "");
  else if (event.type === "join") line(esc(event.name) + " joined", "sys");
  else if (event.type === "leave") line(esc(event.name) + " left", "sys");
  else line(esc(event.text), "sys");
}
$("join").onsubmit = (e) => {
  e.preventDefault();
  if (ws) ws.close(1000, "switching rooms");
  me = $("name").value.trim();
  const room = $("room").value.trim();
  $("log").textContent = "";
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + "/ws/chat/" + encodeURIComponent(room) + "?name=" + encodeURIComponent(me));
  ws.onopen = () => { $("where").textContent = "#" + room; $("text").disabled = false; $("text").focus(); };
  ws.onmessage = (m) => {
    let data = null;
    try { data = JSON.parse(m.data); } catch (err) { /* plain text, e.g. from redis-cli */ }
    if (data && typeof data === "object") show(data); else line(esc(m.data), "sys");
  };
  ws.onclose = (c) => { $("text").disabled = true; line("disconnected (" + c.code + ")", "sys"); };
};
$("say").onsubmit = (e) => {
  e.preventDefault();
  if (ws && ws.readyState === WebSocket.OPEN && $("text").value) { ws.send($("text").value); $("text").value = ""; }
};
</script>
"""


def make_pubsub() -> PubSub:
    """Redis when ``WSM_REDIS_URL`` is set, else in-memory (this process only).

    Nothing connects here: RedisPubSub opens its connections on first use, in
    the worker process, so gunicorn may import this module before forking.
    """
    url = os.environ.get("WSM_REDIS_URL")
    if not url:
        return MemoryPubSub()
    from wsmiddleware.pubsub import RedisPubSub  # needs the redis extra: pip install 'wsmiddleware[redis]'

    return RedisPubSub(url)


def event(kind: str, **fields: object) -> str:
    return json.dumps({"type": kind, "time": time.time(), **fields})


class ChatRoom(PubSubWS):
    """``/ws/chat/{room}?name=...``: what a member types reaches everyone in the room."""

    def __init__(self, pubsub: PubSub) -> None:
        super().__init__(pubsub, "chat:{room}")

    def on_handshake(self, request: webob.Request):
        room = request.path_info.rsplit("/", 1)[-1]
        if not ROOM.match(room):
            return webob.exc.HTTPBadRequest("room names are 1 to 32 letters, digits, '-' or '_'")
        return None

    @staticmethod
    def name_of(websocket) -> str:
        name = " ".join(websocket.request.GET.get("name", "").split())[:32]
        return name or "anonymous"

    def on_open(self, websocket) -> None:
        super().on_open(websocket)
        self._announce(websocket, event("join", name=self.name_of(websocket)))

    def before_publish(self, websocket, channel: str, message):
        if not isinstance(message, str) or not message.strip():
            return None  # the page only sends text; ignore anything else
        return event("message", name=self.name_of(websocket), text=message[:MAX_TEXT])

    def on_close(self, websocket) -> None:
        super().on_close(websocket)
        self._announce(websocket, event("leave", name=self.name_of(websocket)))

    def _announce(self, websocket, message: str) -> None:
        try:
            self.pubsub.publish(self.channel_for(websocket), message)
        except PubSubError as exc:
            self.publish_failed(websocket, message, exc)


pubsub = make_pubsub()


def site(environ, start_response):
    """The ordinary WSGI app the middleware wraps: the page and a publishing view."""
    request = webob.Request(environ)
    if request.path_info == "/":
        response = webob.Response(PAGE, content_type="text/html", charset="utf-8")
    elif request.path_info == "/announce" and request.method == "POST":
        room = request.GET.get("room", "lobby")
        text = request.body.decode("utf-8", "replace").strip()[:MAX_TEXT]
        if not ROOM.match(room) or not text:
            response = webob.exc.HTTPBadRequest("need ?room=NAME and a text body")
        else:
            try:
                pubsub.publish(f"chat:{room}", event("announce", text=text))
                response = webob.Response(json.dumps({"ok": True, "pid": os.getpid()}).encode(),
                                          content_type="application/json")
            except PubSubError as exc:
                response = webob.exc.HTTPServiceUnavailable(str(exc))
    else:
        response = webob.exc.HTTPNotFound()
    return response(environ, start_response)


application = WebSocketMiddleware(site, {"/ws/chat/{room}": ChatRoom(pubsub)})


def main(argv: list[str] | None = None) -> None:
    """Serve the chat: ``[--host H] [--port P]``, default 127.0.0.1:8000."""
    from wsmiddleware.server import main as serve_main

    serve_main(application, argv, description=__doc__.splitlines()[0],
               label=f"chat example ({type(pubsub).__name__})")


if __name__ == "__main__":
    main()
