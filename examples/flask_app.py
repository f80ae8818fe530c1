"""An existing Flask app, given WebSocket by the middleware; its login session guards the socket.

    python examples/flask_app.py [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000/, log in with any name, and chat with the other
logged-in tabs. The WebSocket handler reads Flask's own signed session cookie
in ``on_handshake``: without a login the upgrade is refused with 401, before
any WebSocket exists. Under gunicorn:

    gunicorn -k gevent -b 127.0.0.1:8000 examples.flask_app:application

(Flask's development server, ``flask run``, cannot hand its socket over: use
one of the gevent servers.)
"""

from __future__ import annotations

import os

import webob.exc
from flask import Flask, jsonify, redirect, render_template_string, request, session, url_for

from wsmiddleware import WS, ConnectionClosed, WebSocketMiddleware

app = Flask(__name__)
# A real deployment sets its own secret; this default only suits a local demo.
app.secret_key = os.environ.get("FLASK_SECRET_KEY", "wsmiddleware-example-only")
app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Flask + wsmiddleware</title>
<h1>Flask + wsmiddleware</h1>
{% if user %}
<p>Logged in as <b id="me">{{ user }}</b>.
<form method="post" action="{{ url_for('logout') }}" style="display:inline"><button>Log out</button></form></p>
<form id="f"><input id="m" autocomplete="off" autofocus placeholder="say something"> <button>Send</button></form>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/room");
ws.onmessage = (event) => log(event.data);
ws.onclose = (event) => log("closed " + event.code);
document.getElementById("f").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("m");
  ws.send(input.value); input.value = "";
};
</script>
{% else %}
<form method="post" action="{{ url_for('login') }}">
  <input name="name" placeholder="your name" autofocus> <button>Log in</button>
</form>
{% endif %}
"""


@app.get("/")
def index():
    return render_template_string(PAGE, user=session.get("user"))


@app.post("/login")
def login():
    name = (request.form.get("name") or "").strip()[:40]
    if not name:
        return "a name is required\n", 400
    session["user"] = name
    return redirect(url_for("index"))


@app.post("/logout")
def logout():
    session.pop("user", None)
    return redirect(url_for("index"))


@app.get("/api/online")
def online():
    return jsonify(sorted({handler.user for handler in Room.members}))


class Room(WS):
    """One instance per connection (mounted as a class), so ``self.user`` is this client's."""

    #: Every open connection's handler; one process (use PubSubWS with Redis across processes).
    members: set[Room] = set()

    def on_handshake(self, req):
        # Flask opens its session from the request's cookie, exactly as for a view.
        with app.request_context(req.environ):
            self.user = session.get("user")
        if not self.user:
            return webob.exc.HTTPUnauthorized("log in first")
        return None

    def on_open(self, websocket):
        self.websocket = websocket
        Room.members.add(self)
        self.broadcast(f"* {self.user} joined")

    def on_message(self, websocket, message):
        self.broadcast(f"{self.user}: {message}")

    def on_close(self, websocket):
        Room.members.discard(self)
        self.broadcast(f"* {self.user} left")

    @classmethod
    def broadcast(cls, text: str) -> None:
        for member in list(cls.members):
            try:
                member.websocket.write(text)
            except ConnectionClosed:
                cls.members.discard(member)


# The usual way to add WSGI middleware to Flask: wrap its wsgi_app, keep the Flask object.
app.wsgi_app = WebSocketMiddleware(app.wsgi_app, {"/ws/room": Room})  # type: ignore[method-assign]
application = app


def main(argv: list[str] | None = None) -> None:
    """Serve the example: ``[--host H] [--port P]``, default 127.0.0.1:8000."""
    from wsmiddleware.server import main as serve_main

    serve_main(application, argv, description=__doc__.splitlines()[0], label="Flask example")


if __name__ == "__main__":
    main()
