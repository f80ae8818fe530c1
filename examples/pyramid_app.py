"""A Pyramid app with live updates: ordinary views change state, WebSocket clients watch it.

    python examples/pyramid_app.py [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000/ in two tabs and press the button: the click is a
plain ``POST /api/votes`` handled by a Pyramid view, which pushes the new count
to every open WebSocket. Under gunicorn:

    gunicorn -k gevent -b 127.0.0.1:8000 examples.pyramid_app:application
"""

from __future__ import annotations

import json

from pyramid.config import Configurator
from pyramid.response import Response

from wsmiddleware import WS, ConnectionClosed, WebSocketMiddleware

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Pyramid + wsmiddleware</title>
<h1>Pyramid + wsmiddleware</h1>
<p>Votes: <b id="votes">?</b> <button id="vote">+1</button></p>
<script>
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/votes");
ws.onmessage = (event) => { document.getElementById("votes").textContent = JSON.parse(event.data).votes; };
document.getElementById("vote").onclick = () => fetch("/api/votes", {method: "POST"});
</script>
"""


class VoteFeed(WS):
    """Shared by every watcher: sends the count on open and on every change."""

    def __init__(self) -> None:
        self.votes = 0
        self.watchers: set = set()

    def on_open(self, websocket):
        self.watchers.add(websocket)
        websocket.write(self.snapshot())

    def on_close(self, websocket):
        self.watchers.discard(websocket)

    def snapshot(self) -> str:
        return json.dumps({"votes": self.votes, "watchers": len(self.watchers)})

    def vote(self) -> int:
        """Called from a Pyramid view (another greenlet): writes are safe from anywhere."""
        self.votes += 1
        message = self.snapshot()
        for websocket in list(self.watchers):
            try:
                websocket.write(message)
            except ConnectionClosed:
                self.watchers.discard(websocket)
        return self.votes


feed = VoteFeed()


def home(request):
    return Response(PAGE, content_type="text/html", charset="utf-8")


def get_votes(request):
    return {"votes": feed.votes, "watchers": len(feed.watchers)}


def post_vote(request):
    return {"votes": feed.vote()}


def make_pyramid_app():
    """The Pyramid application as its authors would write it, knowing nothing of WebSocket."""
    with Configurator() as config:
        config.add_route("home", "/")
        config.add_route("votes", "/api/votes")
        config.add_view(home, route_name="home")
        config.add_view(get_votes, route_name="votes", request_method="GET", renderer="json")
        config.add_view(post_vote, route_name="votes", request_method="POST", renderer="json")
        return config.make_wsgi_app()


application = WebSocketMiddleware(make_pyramid_app(), {"/ws/votes": feed})


def main(argv: list[str] | None = None) -> None:
    """Serve the example: ``[--host H] [--port P]``, default 127.0.0.1:8000."""
    from wsmiddleware.server import main as serve_main

    serve_main(application, argv, description=__doc__.splitlines()[0], label="Pyramid example")


if __name__ == "__main__":
    main()
