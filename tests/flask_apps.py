"""The Flask app the ``wsmiddleware.flask`` tests serve: Flask-Login, Flask-SQLAlchemy, an app factory.

``create_app`` is the usual factory; the extension ``ws`` and its routes are
declared at import, before any app exists. The servers import ``application``,
whose SQLite file is ``$WSM_FLASK_DB``. ``/events?id=KEY`` reports what the
handlers and the teardown functions recorded for the connections opened with
``?id=KEY``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import tempfile
from typing import Any

import flask
from flask import Flask, abort, current_app, g, jsonify, request, session
from flask_login import LoginManager, UserMixin, current_user, login_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wsmiddleware import WS, HandshakeError
from wsmiddleware.flask import WebSockets

# gunicorn configures only its own loggers; tests/serve.py does the same for pywsgi.
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
ws = WebSockets()

#: ?id= key -> what happened: ("handler", ...) entries and ("teardown", ...) entries.
EVENTS: dict[str, list[Any]] = collections.defaultdict(list)


class User(UserMixin, db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)


class Note(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    room: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(String(200))


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


def key_of(websocket) -> str:
    return websocket.request.GET.get("id", "-")


def record(websocket, *event: Any) -> None:
    EVENTS[key_of(websocket)].append(list(event))


# -- WebSocket routes, declared before any app ------------------------------------------------


@ws.route("/ws/whoami")
class WhoAmI(WS):
    """Logged-in users only; the connection knows who it serves."""

    def on_handshake(self, req):
        if not current_user.is_authenticated:
            abort(401)
        return None

    def on_open(self, websocket):
        user = websocket.state["user"]
        websocket.write(json.dumps({"user": user.name, "type": type(user).__name__, "app": current_app.name}))

    def on_message(self, websocket, message):
        websocket.write(f"{websocket.state['user'].name}: {message}")


@ws.route("/ws/refuse/{how}")
class Refuse(WS):
    """Refusals as a Flask view makes them."""

    def on_handshake(self, req):
        how = flask.request.view_args["how"]
        if how == "abort":
            abort(403)  # the app's errorhandler(403) renders it
        if how == "response":
            return flask.Response("teapot says no\n", status=418, headers={"X-Why": "teapot"})
        if how == "session":
            session["refused"] = "yes"  # saved with the refusal
            return flask.Response("refused, noted in your session\n", status=409)
        if how == "handled":
            raise LookupError("no such thing")  # errorhandler(LookupError)
        if how == "unhandled":
            raise RuntimeError("boom in on_handshake")
        if how == "core":
            raise HandshakeError("core refusal", 409)
        return None


@ws.route("/ws/context")
class Context(WS):
    """current_app and g in callbacks; g is fresh per callback."""

    def on_open(self, websocket):
        g.key = key_of(websocket)
        websocket.write(json.dumps({"app": current_app.name, "user_in_state": "user" in websocket.state}))

    def on_message(self, websocket, message):
        g.key = key_of(websocket)
        had = g.get("mark")
        g.mark = message
        websocket.write(json.dumps({"had": had}))


@ws.route("/ws/notes/{room}")
class Notes(WS):
    """Flask-SQLAlchemy from on_message; raises on demand to show teardown gets the error."""

    def on_message(self, websocket, message):
        g.key = key_of(websocket)
        if message == "raise":
            db.session.execute(select(func.count(Note.id)))  # a session in use when it fails
            raise ValueError("callback failed")
        room = websocket.url_vars["room"]
        db.session.add(Note(room=room, text=message))
        db.session.commit()
        count = db.session.scalar(select(func.count(Note.id)).where(Note.room == room))
        record(websocket, "message", message, count)
        websocket.write(str(count))


@ws.route("/ws/guarded")
class Guarded(WS):
    def on_open(self, websocket):
        websocket.write("past the guard")


@ws.route("/ws/small", max_message_size=16)
class Small(WS):
    """A per-route option: under the app's limit."""

    def on_message(self, websocket, message):
        websocket.write(message)


# -- the app factory -----------------------------------------------------------------------


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="flask-tests-only",
        SQLALCHEMY_DATABASE_URI="sqlite:///" + os.environ.get(
            "WSM_FLASK_DB", os.path.join(tempfile.gettempdir(), "wsm-flask-tests.sqlite3")),
        WSMIDDLEWARE_MAX_MESSAGE_SIZE=1024,
        WSMIDDLEWARE_PING_INTERVAL=None,
    )
    app.config.update(config or {})

    # Registered before db.init_app: teardown_appcontext functions run in reverse
    # order, so this one runs after Flask-SQLAlchemy's has removed the session.
    @app.teardown_appcontext
    def after_context(exc):
        key = g.get("key")
        if key is not None:
            EVENTS[key].append(["teardown", db.session.registry.has(), None if exc is None else repr(exc)])

    db.init_app(app)
    login_manager.init_app(app)
    ws.init_app(app)

    @app.before_request
    def guard():
        if request.path == "/ws/guarded" and request.headers.get("X-Pass") != "yes":
            return "guarded by before_request\n", 429
        return None

    @app.after_request
    def stamp(response):
        response.headers["X-After-Request"] = "ran"
        return response

    @app.errorhandler(403)
    def forbidden(error):
        return "the app's own 403 page\n", 403

    @app.errorhandler(LookupError)
    def lookup(error):
        return f"handled: {error}\n", 404

    @app.post("/login")
    def login():
        name = request.form["name"]
        user = db.session.scalar(select(User).where(User.name == name))
        if user is None:
            user = User(name=name)
            db.session.add(user)
            db.session.commit()
        login_user(user)
        return "logged in\n"

    @app.get("/session")
    def show_session():
        return jsonify({key: value for key, value in session.items() if not key.startswith("_")})

    @app.get("/events")
    def events():
        return jsonify(EVENTS.get(request.args["id"], []))

    with app.app_context():
        db.create_all()
    return app


application = create_app()
