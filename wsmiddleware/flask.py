"""Flask integration: WebSocket routes as a Flask extension, handshakes handled like views.

::

    from flask import Flask, abort
    from flask_login import current_user

    from wsmiddleware import WS
    from wsmiddleware.flask import WebSockets

    ws = WebSockets()                       # or WebSockets(app)

    @ws.route("/ws/chat/{room}", max_message_size=64 * 1024)
    class Chat(WS):                         # a class: one instance per connection
        def on_handshake(self, request):
            if not current_user.is_authenticated:
                abort(401)

        def on_message(self, websocket, message):
            websocket.write(f"{websocket.state['user'].name}: {message}")

    def create_app():
        app = Flask(__name__)
        app.config["WSMIDDLEWARE_PING_INTERVAL"] = 30
        ws.init_app(app)                    # wraps app.wsgi_app; the Flask object stays
        return app

Serve with ``gunicorn -k gevent 'myapp:create_app()'`` (or ``gevent.pywsgi``);
Flask's own development server (``flask run``) cannot hand over its socket, so
WebSocket routes answer 501 there and everything else works.

**The handshake is a request.** ``on_handshake`` runs where a view would, inside
the app's request context: ``flask.request``, ``session``, ``g``, ``current_app``,
``url_for`` and Flask-Login's ``current_user`` work as in a view (its argument is
still the core's ``webob.Request``, so handlers stay portable).
``request.view_args`` holds the route's variables. The app's
``url_value_preprocessors`` and ``before_request`` functions run first, as
``full_dispatch_request`` runs them: Flask users guard a whole app there (a
global login check, maintenance mode, rate limits), and a WebSocket slipping
past those guards would be a hole. A blueprint's hooks run only if the path also
matches one of its URL rules (Flask knows a request's blueprint from its rule);
``WSMIDDLEWARE_BEFORE_REQUEST = False`` skips them all. What a ``before_request``
function returns is a view's return value, so ``("no", 403)`` refuses there.

What ``on_handshake`` returns follows the core contract (``None`` or a
subprotocol accepts, ``False`` is 403, a WSGI response refuses; a ``str`` is a
subprotocol, not a body). Exceptions go through Flask's error handling as in a
view: ``abort(403)`` and other ``HTTPException`` s give the app's
``errorhandler`` page, or werkzeug's; an exception with a registered handler
gets that handler's response; an unhandled one goes to ``app.handle_exception``
(``got_request_exception``, which error trackers listen to, logged on
``app.logger``, the app's 500 page; re-raised with ``PROPAGATE_EXCEPTIONS``, in
debug and testing, and then the core's 500). ``HandshakeError`` bypasses Flask
and keeps its core meaning. Every refusal is finalized like a view's response:
``after_request`` functions run and a changed ``session`` is saved with it.

An accepted handshake has no response object for ``after_request`` and no
``Set-Cookie`` on its 101: ``session`` changes made there are **not saved**
(log in and out over HTTP). ``teardown_request`` and ``teardown_appcontext``
run at the end of the handshake either way, so Flask-SQLAlchemy's session is
removed before the connection opens.

**The user reaches the connection.** With Flask-Login set up on the app,
``websocket.state["user"]`` is the ``current_user`` of the accepted handshake
(an anonymous user object if nobody logged in), unless ``on_handshake`` put a
``"user"`` there itself. Flask-Login's ``current_user`` needs a request context
and is ``None`` in callbacks: use ``websocket.state["user"]``. It is the object
the user loader returned during the handshake; a database model loaded then is
detached afterwards (its loaded columns read fine; reload it, e.g.
``db.session.get(User, user.id)``, to change it or follow relationships).

**Callbacks run in an app context.** Each callback (``on_open``, ``on_message``,
..., ``on_close``) gets an application context of its own, as a request does:
``current_app`` and ``g`` (fresh per callback) work, and ``teardown_appcontext``
runs after each one, with the exception if the callback raised, so
Flask-SQLAlchemy's session is removed after every callback. The exception then
goes on to the engine (logged, close 1011). There is no request context there:
``url_for`` needs ``SERVER_NAME``, as in any app context.

**Configuration** comes from ``app.config`` at ``init_app`` (keyword arguments of
``WebSockets(...)`` are the defaults; ``init_app`` fills in the missing keys with
``setdefault``, so ``app.config`` shows what is in effect):

==================================  ============  ==========================================
key                                 default       meaning (README, "Options")
==================================  ============  ==========================================
``WSMIDDLEWARE_MAX_MESSAGE_SIZE``   ``2**20``     largest incoming message; over it: close 1009
``WSMIDDLEWARE_PING_INTERVAL``      ``20.0``      idle seconds before a keepalive ping; ``None``: off
``WSMIDDLEWARE_PING_TIMEOUT``       ``20.0``      seconds to wait for its pong (then close 1011)
``WSMIDDLEWARE_COMPRESSION``        ``"deflate"`` permessage-deflate, or ``None``
``WSMIDDLEWARE_ALLOWED_ORIGINS``    ``None``      ``None``: same origin; a list of origins, ``["*"]``
``WSMIDDLEWARE_SEND_QUEUE_LIMIT``   ``4 * 2**20`` bytes queued for a slow reader
``WSMIDDLEWARE_SLOW_CONSUMER``      ``"close"``   ``"close"`` (1008) or ``"drop"``
``WSMIDDLEWARE_CLOSE_TIMEOUT``      ``5.0``       seconds a closing handshake may take
``WSMIDDLEWARE_MAX_CONNECTIONS``    ``None``      open WebSockets of the app; beyond: 503
``WSMIDDLEWARE_BEFORE_REQUEST``     ``True``      run ``before_request`` functions on handshakes
==================================  ============  ==========================================

An unknown ``WSMIDDLEWARE_*`` key (a typo) or a value of the wrong type raises
``ValueError`` at ``init_app``. Per-route options go to :meth:`WebSockets.route`
or :meth:`WebSockets.mount`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, current_app, request_started
from flask import request as flask_request
from werkzeug.exceptions import HTTPException

from ._answer import STATE_KEY, Reject, _is_wsgi_app
from .exceptions import ConnectionClosed, HandshakeError
from .handler import WS
from .integration import Integration
from .middleware import WebSocketMiddleware
from .options import Options

if TYPE_CHECKING:  # pragma: no cover
    import webob

    from .connection import WebSocket

__all__ = ["WebSockets", "FlaskIntegration", "CONFIG_PREFIX", "EXTENSION_KEY"]

logger = logging.getLogger("wsmiddleware.flask")

#: Prefix of the configuration keys in ``app.config``.
CONFIG_PREFIX = "WSMIDDLEWARE_"
#: Key of the extension in ``app.extensions``; the app's middleware is under ``EXTENSION_KEY + ".middleware"``.
EXTENSION_KEY = "wsmiddleware"
_MIDDLEWARE_KEY = EXTENSION_KEY + ".middleware"
_BEFORE_REQUEST = "BEFORE_REQUEST"

#: option -> (types allowed besides None, whether None is allowed). compression and
#: slow_consumer are checked by Options itself; bool is refused where a number is meant.
_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "max_message_size": ((int,), True),
    "ping_interval": ((int, float), True),
    "ping_timeout": ((int, float), True),
    "send_queue_limit": ((int,), False),
    "close_timeout": ((int, float), False),
    "max_connections": ((int,), True),
    "allowed_origins": ((list, tuple), True),
}
_DEFAULTS: dict[str, Any] = {f.name: getattr(Options(), f.name) for f in fields(Options)}
_DEFAULTS["max_connections"] = None

Handler = TypeVar("Handler", bound="WS | type[WS]")


class FlaskIntegration(Integration):
    """Runs handshakes as Flask runs a view and callbacks in an app context (see the module docs).

    :class:`WebSockets` makes one per app; for a hand-made stack::

        app.wsgi_app = WebSocketMiddleware(app.wsgi_app, routes, integration=FlaskIntegration(app))
    """

    def __init__(self, app: Flask, *, before_request: bool = True) -> None:
        self.app = app
        #: Whether ``url_value_preprocessors`` and ``before_request`` functions run on handshakes.
        self.before_request = before_request

    def handshake(self, request: webob.Request, on_handshake: Callable[[webob.Request], Any]) -> Any:
        """Run ``on_handshake`` in a request context, between ``before_request`` and error handling."""
        app = self.app
        environ = request.environ
        had_request = "werkzeug.request" in environ
        ctx = app.request_context(environ)
        error: BaseException | None = None
        try:
            # What Flask.wsgi_app does around full_dispatch_request.
            try:
                ctx.push()
                answer = self._dispatch(request, on_handshake)
            except HandshakeError:
                raise  # the core's own refusal, not an application error
            except Exception as exc:
                error = exc
                answer = app.handle_exception(exc)  # re-raises with PROPAGATE_EXCEPTIONS
            except BaseException as exc:  # the greenlet killed: teardown hears of it
                error = exc
                raise
            if _is_wsgi_app(answer):
                # Rendered while the request context is still there, as Flask sends a response.
                return _render(answer, environ)
            return answer
        finally:
            if error is not None and app.should_ignore_error(error):
                error = None
            ctx.pop(error)
            if not had_request:
                # werkzeug's back-reference would keep the Flask request (and what it
                # cached) alive as long as the connection's environ.
                environ.pop("werkzeug.request", None)

    def _dispatch(self, request: webob.Request, on_handshake: Callable[[webob.Request], Any]) -> Any:
        """``full_dispatch_request`` with ``on_handshake`` as the view; an accept comes back unfinalized."""
        app = self.app
        if flask_request.url_rule is None:
            # No Flask rule matched (the usual case): the WebSocket route did.
            flask_request.routing_exception = None
            flask_request.view_args = dict(request.urlvars)
        rv: Any
        try:
            request_started.send(app, _async_wrapper=app.ensure_sync)
            rv = app.preprocess_request() if self.before_request else None
            if rv is None:
                answer = on_handshake(request)
                if not _is_wsgi_app(answer):
                    if answer is None or isinstance(answer, str):
                        self._accepted(environ=request.environ)
                    return answer  # the core applies its contract (False -> 403, nonsense -> 500)
                rv = answer
        except HandshakeError:
            raise
        except Exception as exc:
            try:
                rv = app.handle_user_exception(exc)  # HTTPException -> errorhandler page or itself
            except Exception as unhandled:
                if unhandled is not exc or isinstance(exc, HTTPException) or not _is_wsgi_app(exc):
                    raise
                rv = exc  # a WSGI response raised (webob.exc, ...) is the refusal, as in the core
        return app.finalize_request(rv)  # after_request, session saved, request_finished

    def _accepted(self, environ: dict[str, Any]) -> None:
        from flask import session

        if session.modified:
            logger.debug("session changed during an accepted WebSocket handshake to %r is not saved "
                         "(a 101 sets no cookie)", environ.get("PATH_INFO"))
        state = environ.get(STATE_KEY)
        if isinstance(state, dict) and "user" not in state and hasattr(self.app, "login_manager"):
            from flask_login import current_user

            state["user"] = current_user._get_current_object()  # resolved now, while a request context exists

    def callback(self, websocket: WebSocket, callback: Callable[..., Any], *args: Any) -> None:
        """Run a callback in an app context of its own; its teardown sees what the callback raised."""
        ctx = self.app.app_context()
        ctx.push()
        error: BaseException | None = None
        try:
            callback(websocket, *args)
        except ConnectionClosed:
            raise  # the peer went away: the engine's normal path, not an error for teardown
        except BaseException as exc:
            error = exc
            raise
        finally:
            # Explicit: pop() would otherwise read sys.exc_info() and report ConnectionClosed.
            ctx.pop(error)


def _check_type(key: str, name: str, value: Any) -> None:
    """A config value of the wrong type fails at init_app, not at the first connection."""
    if name not in _TYPES:
        return  # compression, slow_consumer: Options checks their values
    allowed, nullable = _TYPES[name]
    if value is None:
        ok = nullable
    else:
        # A bool is an int to isinstance, but True as a size or a timeout is a mistake.
        ok = isinstance(value, allowed) and not isinstance(value, bool)
        if ok and name == "allowed_origins":
            ok = all(isinstance(origin, str) for origin in value)
    if not ok:
        kinds = " or ".join("a list of str" if t is list else t.__name__ for t in allowed if t is not tuple)
        raise ValueError(f"app.config[{key!r}] must be {kinds}{' or None' if nullable else ''}, not {value!r}")


def _render(response: Callable[..., Any], environ: dict[str, Any]) -> Reject:
    """A refusal as the core's already rendered answer."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started[:] = [status, list(headers)]
        return body.append

    body: list[bytes] = []
    chunks = response(environ, start_response)
    try:
        body.extend(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if not started:
        raise TypeError(f"the refusal {response!r} never called start_response")
    return Reject(started[0], started[1], body, started[0])


class WebSockets:
    """The Flask extension: WebSocket routes on one or more apps.

    ``WebSockets(app)`` or ``WebSockets()`` then :meth:`init_app` (app factories).
    ``options`` are defaults for every app (``app.config`` keys override them).
    Routes may be declared before or after :meth:`init_app`; each is mounted
    on every app the extension is initialised on. Per-app state (the app's
    :class:`~wsmiddleware.WebSocketMiddleware`) lives on the app, in
    ``app.extensions``.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(_DEFAULTS) - {_BEFORE_REQUEST.lower()})
        if unknown:
            raise TypeError(f"unknown WebSocket option(s): {', '.join(unknown)}")
        self.options = options
        #: (path, handler, options) of every route, mounted on each app at init_app.
        self.routes: list[tuple[str, WS | type[WS], dict[str, Any]]] = []
        # Middlewares of the apps initialised so far, for routes added later; weak,
        # so the extension never keeps an app alive (app factories in tests).
        self._middlewares: weakref.WeakSet[WebSocketMiddleware] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read ``WSMIDDLEWARE_*`` from ``app.config``, wrap ``app.wsgi_app``, mount the routes."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(f"a wsmiddleware WebSockets extension is already registered on {app!r}; "
                               "mount every route on that one")
        options, before_request = self._config(app)
        middleware = WebSocketMiddleware(app.wsgi_app, integration=FlaskIntegration(app, before_request=before_request),
                                         **options)
        for path, handler, route_options in self.routes:
            middleware.mount(path, handler, **route_options)
        # The usual way to add WSGI middleware to Flask: the Flask object stays the app.
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions[EXTENSION_KEY] = self
        app.extensions[_MIDDLEWARE_KEY] = middleware
        self._middlewares.add(middleware)
        logger.debug("WebSocket routes on %s: %s", app.name, [path for path, _, _ in self.routes])

    def _config(self, app: Flask) -> tuple[dict[str, Any], bool]:
        config = app.config
        known = {CONFIG_PREFIX + name.upper() for name in _DEFAULTS} | {CONFIG_PREFIX + _BEFORE_REQUEST}
        unknown = sorted(key for key in config if key.startswith(CONFIG_PREFIX) and key not in known)
        if unknown:
            raise ValueError(f"unknown wsmiddleware setting(s) in app.config: {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        options: dict[str, Any] = {}
        for name, default in _DEFAULTS.items():
            key = CONFIG_PREFIX + name.upper()
            value = config.setdefault(key, self.options.get(name, default))
            _check_type(key, name, value)
            options[name] = value
        before_request = config.setdefault(CONFIG_PREFIX + _BEFORE_REQUEST,
                                           self.options.get(_BEFORE_REQUEST.lower(), True))
        if not isinstance(before_request, bool):
            raise ValueError(f"app.config[{CONFIG_PREFIX + _BEFORE_REQUEST!r}] must be True or False")
        try:
            Options().merged({k: v for k, v in options.items() if k != "max_connections"})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"app.config {CONFIG_PREFIX}*: {exc}") from exc
        return options, before_request

    def mount(self, path: str, handler: WS | type[WS], **options: Any) -> None:
        """Serve ``handler`` (a ``WS`` instance, or subclass for one per connection) at ``path``.

        ``path`` is a route template (``"/ws/chat/{room}"``, see README "Routing");
        ``options`` override the app's for this route (``max_connections`` caps it).
        """
        for middleware in self._middlewares:
            middleware.mount(path, handler, **options)  # fails here, with the app's options, if wrong
        if not self._middlewares:
            # Validate now rather than at init_app, far from the mistake.
            WebSocketMiddleware(None).mount(path, handler, **options)
        self.routes.append((path, handler, dict(options)))

    def route(self, path: str, **options: Any) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`mount`: ``@ws.route("/ws/echo")`` on a ``WS`` subclass."""

        def decorate(handler: Handler) -> Handler:
            self.mount(path, handler, **options)
            return handler

        return decorate

    def middleware(self, app: Flask | None = None) -> WebSocketMiddleware:
        """The :class:`~wsmiddleware.WebSocketMiddleware` of ``app`` (default: ``current_app``).

        Its ``connections`` are the app's open WebSockets.
        """
        target: Any = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return target.extensions[_MIDDLEWARE_KEY]  # type: ignore[no-any-return]
        except KeyError:
            raise RuntimeError(f"WebSockets.init_app was not called for {target!r}") from None
