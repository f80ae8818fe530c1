"""A Flask chat with rooms: Flask-Login guards the sockets, Flask-SQLAlchemy keeps each room's history.

    python examples/flask_app.py [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000/, log in with any name (no password: a demo), pick a
room and chat with the other logged-in tabs; a newcomer gets the room's last
messages. Under gunicorn (``-w 1``: rooms live in the worker's memory unless
``WSM_REDIS_URL`` points at Redis):

    gunicorn -k gevent -w 1 -b 127.0.0.1:8000 examples.flask_app:application

It uses :mod:`wsmiddleware.flask`: ``on_handshake`` reads Flask-Login's
``current_user`` as a view would and refuses anonymous upgrades with 401 before
any WebSocket exists; the callbacks store and read messages with
``db.session`` in an app context, whose session is removed after each one.
Configuration comes from ``FLASK_*`` environment variables through
``app.config.from_prefixed_env()``: ``FLASK_SECRET_KEY``,
``FLASK_SQLALCHEMY_DATABASE_URI`` (default: a SQLite file in the temporary
directory), ``FLASK_WSMIDDLEWARE_PING_INTERVAL=30`` and the other
``WSMIDDLEWARE_*`` keys. Flask's own ``flask run`` cannot hand over its
socket: use one of the commands above.
"""

from __future__ import annotations

if __name__ == "__main__":
    # Before SQLAlchemy creates its pool's locks: they must be gevent's.
    from gevent import monkey

    monkey.patch_all()

import os  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

from flask import Flask, abort, jsonify, redirect, render_template_string, request, url_for  # noqa: E402
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user  # noqa: E402
from flask_sqlalchemy import SQLAlchemy  # noqa: E402
from sqlalchemy import ForeignKey, String, select  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship  # noqa: E402

from wsmiddleware import PubSubError, PubSubWS  # noqa: E402
from wsmiddleware.flask import WebSockets  # noqa: E402
from wsmiddleware.pubsub import MemoryPubSub, PubSub  # noqa: E402

ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
HISTORY = 20
MAX_TEXT = 500


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
ws = WebSockets()


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)


class Message(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    room: Mapped[str] = mapped_column(String(32), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    user: Mapped[User] = relationship(lazy="joined")
    text: Mapped[str] = mapped_column(String(MAX_TEXT))

    def line(self) -> str:
        return f"{self.user.name}: {self.text}"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def make_pubsub() -> PubSub:
    """Redis when ``WSM_REDIS_URL`` is set (rooms across workers and hosts), else this process only."""
    url = os.environ.get("WSM_REDIS_URL")
    if not url:
        return MemoryPubSub()
    from wsmiddleware.pubsub import RedisPubSub  # the redis extra

    return RedisPubSub(url)


pubsub = make_pubsub()


class Room(PubSubWS):
    """``/ws/room/{room}``: logged-in users only; what one sends, the room gets, and the database keeps."""

    def __init__(self) -> None:
        super().__init__(pubsub, "room:{room}")

    def on_handshake(self, req):
        # A request context: current_user is loaded from Flask's session as in a view.
        if not current_user.is_authenticated:
            abort(401, "log in first")
        if not ROOM.match(request.view_args["room"]):
            abort(404, "room names are 1 to 32 letters, digits, '-' or '_'")
        return None

    def on_open(self, websocket):
        super().on_open(websocket)  # subscribed: from now on the room reaches us
        room = websocket.url_vars["room"]
        recent = db.session.scalars(select(Message).where(Message.room == room)
                                    .order_by(Message.id.desc()).limit(HISTORY)).all()
        for message in reversed(recent):
            websocket.write(message.line())
        self.announce(websocket, f"* {websocket.state['user'].name} joined")

    def before_publish(self, websocket, channel, message):
        text = message.strip()[:MAX_TEXT] if isinstance(message, str) else ""
        if not text:
            return None  # empty or binary: nothing to say
        # websocket.state["user"] is the handshake's current_user; this callback has its own
        # database session, so it refers to the user by id.
        saved = Message(room=websocket.url_vars["room"], user_id=websocket.state["user"].id, text=text)
        db.session.add(saved)
        db.session.commit()
        return saved.line()

    def on_close(self, websocket):
        super().on_close(websocket)
        self.announce(websocket, f"* {websocket.state['user'].name} left")

    def announce(self, websocket, line: str) -> None:
        try:
            self.pubsub.publish(self.channel_for(websocket), line)
        except PubSubError as exc:
            self.publish_failed(websocket, line, exc)


ws.mount("/ws/room/{room}", Room())

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Flask + wsmiddleware</title>
<h1>Flask + wsmiddleware</h1>
{% if current_user.is_authenticated %}
<p>Logged in as <b id="me">{{ current_user.name }}</b>.
<form method="post" action="{{ url_for('logout') }}" style="display:inline"><button>Log out</button></form></p>
<form id="join">Room <input id="room" value="lobby" pattern="[A-Za-z0-9_-]{1,32}" required> <button>Join</button></form>
<form id="f"><input id="m" autocomplete="off" autofocus placeholder="say something"> <button>Send</button></form>
<pre id="log"></pre>
<script>
const $ = (id) => document.getElementById(id);
const log = (line) => { $("log").textContent += line + "\\n"; };
let ws = null;
function join(room) {
  if (ws) ws.close(1000, "switching rooms");
  $("log").textContent = "";
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + "/ws/room/" + encodeURIComponent(room));
  ws.onmessage = (event) => log(event.data);
  ws.onclose = (event) => log("closed " + event.code);
}
$("join").onsubmit = (event) => { event.preventDefault(); join($("room").value); };
$("f").onsubmit = (event) => {
  event.preventDefault();
  if (ws && ws.readyState === WebSocket.OPEN) { ws.send($("m").value); $("m").value = ""; }
};
join("lobby");
</script>
{% else %}
<form method="post" action="{{ url_for('login') }}">
  <input name="name" placeholder="your name" autofocus> <button>Log in</button>
</form>
{% endif %}
"""


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory: ``config`` wins over ``FLASK_*`` variables, which win over the defaults."""
    app = Flask(__name__)
    app.config.update(
        # A real deployment sets its own secret (FLASK_SECRET_KEY); this one only suits a local demo.
        SECRET_KEY="wsmiddleware-example-only",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SQLALCHEMY_DATABASE_URI="sqlite:///" + os.path.join(tempfile.gettempdir(), "wsmiddleware-flask-example.sqlite3"),
        WSMIDDLEWARE_MAX_MESSAGE_SIZE=4096,  # chat lines, not files
    )
    app.config.from_prefixed_env()
    app.config.update(config or {})
    db.init_app(app)
    login_manager.init_app(app)
    ws.init_app(app)

    @app.get("/")
    def index():
        return render_template_string(PAGE)

    @app.post("/login")
    def login():
        name = " ".join((request.form.get("name") or "").split())[:40]
        if not name:
            return "a name is required\n", 400
        user = db.session.scalar(select(User).where(User.name == name))
        if user is None:
            user = User(name=name)
            db.session.add(user)
            db.session.commit()
        login_user(user)
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout():
        logout_user()
        return redirect(url_for("index"))

    @app.get("/api/rooms/<room>")
    def online(room: str):
        """Who is in ``room``: the open WebSockets of this app (this process), from an ordinary view."""
        names = {conn.state["user"].name for conn in ws.middleware().connections
                 if conn.url_vars.get("room") == room and "user" in conn.state}
        return jsonify(sorted(names))

    with app.app_context():
        db.create_all()
    return app


application = create_app()


def main(argv: list[str] | None = None) -> None:
    """Serve the example: ``[--host H] [--port P]``, default 127.0.0.1:8000."""
    from wsmiddleware.server import main as serve_main

    serve_main(application, argv, description=__doc__.splitlines()[0], label="Flask example")


if __name__ == "__main__":
    main()
