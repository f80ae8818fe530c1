"""Django integration: WebSocket routes in ``settings.py``, handshakes through the project's middleware.

``mysite/wsgi.py``::

    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

    from wsmiddleware.django import get_wsgi_application

    application = get_wsgi_application()

``mysite/settings.py``::

    WSMIDDLEWARE = {
        "ROUTES": {
            "/ws/chat/{room}": "chat.consumers.ChatWS",              # a WS subclass: one instance per connection
            "/ws/feed": "chat.consumers.feed",                       # a WS instance: shared
            "/ws/admin": ("chat.consumers.AdminWS", {"max_message_size": 65536}),  # per-route options
        },
        "OPTIONS": {"ping_interval": 20, "max_connections": 5000},  # WebSocketMiddleware's options
        # "MIDDLEWARE": [...],  # the handshake's middleware; default: settings.MIDDLEWARE
    }

Serve with ``gunicorn -k gevent mysite.wsgi`` (Django's ``runserver`` cannot hold
a WebSocket: its routes answer 501 there).

* ``on_handshake(request)`` receives the Django ``HttpRequest`` after the
  project's middleware ran on it: ``request.user``, ``request.session``,
  ``request.resolver_match.kwargs`` (the route's variables). Raising
  ``PermissionDenied`` or ``Http404`` (``get_object_or_404``) gives the
  project's 403/404 page, as in a view; returning an ``HttpResponse`` refuses
  with it; a middleware's own response (a login redirect) is the refusal.
  Everything ``on_handshake`` may return in the core contract still holds.
* An accepted connection finds the authenticated user in ``websocket.state["user"]``.
* Callbacks close stale database connections as Django does around a request,
  so the open connections are bounded by the callbacks running at once;
  :func:`closing_db_connections` does the same for greenlets of your own
  (``websocket.spawn``).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIRequest, get_script_name
from django.core.signals import request_finished, request_started
from django.urls import set_script_prefix, set_urlconf
from django.utils.functional import LazyObject
from django.utils.log import log_response
from django.utils.module_loading import import_string

from .._answer import ROUTING_ARGS_KEY, STATE_KEY
from ..handler import WS
from ..integration import Integration
from ..middleware import WebSocketMiddleware
from ._connections import after_callback, before_callback, hold_until_greenlet_ends
from ._handshake import PENDING_ATTR, Chain, Pending, WSGIResponse

if TYPE_CHECKING:  # pragma: no cover
    import webob

    from ..connection import WebSocket
    from ..middleware import WSGIApp

__all__ = ["DjangoIntegration", "get_wsgi_application", "from_settings", "closing_db_connections", "SETTING"]

logger = logging.getLogger("wsmiddleware.django")

_R = TypeVar("_R")

#: The name of the setting: a dict with "ROUTES", "OPTIONS" and "MIDDLEWARE".
SETTING = "WSMIDDLEWARE"
_KEYS = ("ROUTES", "OPTIONS", "MIDDLEWARE")


class DjangoIntegration(Integration):
    """Runs handshakes through Django's middleware and callbacks as Django runs requests.

    ``middleware``: the dotted paths the handshake goes through, outermost
    first; ``None`` (the default) means ``settings.MIDDLEWARE``. For a
    hand-made middleware stack::

        WebSocketMiddleware(django_app, routes, integration=DjangoIntegration())
    """

    def __init__(self, middleware: Sequence[str] | None = None) -> None:
        self.middleware = None if middleware is None else list(middleware)
        self._chain: Chain | None = None

    def load_middleware(self) -> None:
        """Build the middleware chain (done on the first handshake if not before); needs Django set up."""
        self._chain = Chain(settings.MIDDLEWARE if self.middleware is None else self.middleware)

    def handshake(self, request: webob.Request, on_handshake: Callable[[Any], Any]) -> Any:
        """Run ``on_handshake`` with the ``HttpRequest``, inside the middleware, as the view of a request."""
        if self._chain is None:
            self.load_middleware()
        chain: Any = self._chain
        environ = request.environ
        sender = type(self)
        # What WSGIHandler.__call__ and BaseHandler.get_response do before the middleware.
        set_script_prefix(get_script_name(environ))
        request_started.send(sender=sender, environ=environ)
        try:
            # A copy: WSGIRequest rewrites PATH_INFO and SCRIPT_NAME in its META as
            # decoded text, while the connection keeps the server's PEP 3333 environ.
            # The state dict is shared, so what on_handshake puts there arrives.
            django_request = WSGIRequest(dict(environ))
            pending = Pending(on_handshake, _url_vars(environ))
            setattr(django_request, PENDING_ATTR, pending)
            set_urlconf(settings.ROOT_URLCONF)
            response = chain(django_request)
            state = django_request.environ.get(STATE_KEY)
            if state is not environ.get(STATE_KEY):  # on_handshake replaced the dict
                environ[STATE_KEY] = state
        except BaseException:
            request_finished.send(sender=sender)
            raise
        if response is not pending.accepted:
            # The middleware or on_handshake answered: that is the refusal, sent as
            # Django would (its close() sends request_finished once the core has it).
            if response.status_code >= 400:
                log_response("%s: %s", response.reason_phrase, django_request.path,
                             response=response, request=django_request)
            return WSGIResponse(response)
        try:
            if pending.raised is None and (pending.answer is None or isinstance(pending.answer, str)):
                _remember_user(django_request, environ.get(STATE_KEY))
        finally:
            response.close()  # request_finished: close_old_connections, close_caches
            hold_until_greenlet_ends()
        if pending.raised is not None:
            raise pending.raised
        return pending.answer

    def callback(self, websocket: WebSocket, callback: Callable[..., Any], *args: Any) -> None:
        """Run a callback with the database connections looked after as around a request."""
        # reverse() in a callback builds URLs under the mount prefix, as in a view;
        # the prefix is per greenlet and a callback may run in a fresh one.
        set_script_prefix(get_script_name(websocket.environ))
        before_callback()
        try:
            callback(websocket, *args)
        finally:
            after_callback()


def closing_db_connections(func: Callable[..., _R]) -> Callable[..., _R]:
    """Wrap ``func`` to look after database connections as callbacks do, for greenlets of your own.

    Callbacks are covered by the integration; a greenlet started with
    ``websocket.spawn`` or ``gevent.spawn`` is not, and a connection it opens
    would stay open until garbage collection. ``websocket.spawn(closing_db_connections(producer),
    websocket)``: stale connections are closed before and after each call, and
    persistent ones when the greenlet ends. A producer that loops forever should
    call ``django.db.close_old_connections()`` in its loop, as any long-running
    Django process does.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> _R:
        before_callback()
        try:
            return func(*args, **kwargs)
        finally:
            after_callback()

    return wrapper


def _url_vars(environ: dict[str, Any]) -> dict[str, Any]:
    routing_args = environ.get(ROUTING_ARGS_KEY)
    if isinstance(routing_args, (tuple, list)) and len(routing_args) == 2 and isinstance(routing_args[1], dict):
        return routing_args[1]
    return {}


def _remember_user(request: Any, state: Any) -> None:
    """``websocket.state["user"]``: the user of an accepted handshake, unless on_handshake put one there."""
    if not isinstance(state, dict) or "user" in state or not hasattr(request, "user"):
        return
    user = request.user
    if isinstance(user, LazyObject):
        # AuthenticationMiddleware's lazy user holds the whole request (and so
        # would the connection): resolve it now, in the handshake's database
        # session, and keep the user it resolves to (a LazyObject's copy is a
        # copy of what it wraps).
        user.is_authenticated  # noqa: B018  (evaluates the lazy object)
        user = copy.copy(user)
    state["user"] = user


def from_settings(app: WSGIApp | None) -> WebSocketMiddleware:
    """``app`` (Django's WSGI application, or anything around it) served with ``settings.WSMIDDLEWARE``.

    Raises ``ImproperlyConfigured`` for a malformed setting, an unknown key or
    option, or a route whose dotted path does not import or is not a ``WS``.
    """
    config = getattr(settings, SETTING, None)
    if config is None:
        logger.warning("settings.%s is not set: no WebSocket route is served", SETTING)
        config = {}
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTING} must be a dict with keys {', '.join(_KEYS)}")
    unknown = sorted(set(config) - set(_KEYS))
    if unknown:
        raise ImproperlyConfigured(f"settings.{SETTING}: unknown key(s) {', '.join(map(repr, unknown))} "
                                   f"(known: {', '.join(_KEYS)})")
    routes_setting = config.get("ROUTES") or {}
    options = config.get("OPTIONS") or {}
    middleware = config.get("MIDDLEWARE")
    if not isinstance(routes_setting, Mapping) or not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTING}['ROUTES'] and ['OPTIONS'] must be dicts")
    if middleware is not None and (isinstance(middleware, str) or not isinstance(middleware, Sequence)):
        raise ImproperlyConfigured(f"settings.{SETTING}['MIDDLEWARE'] must be a list of dotted paths")
    routes = {template: _route(template, value) for template, value in routes_setting.items()}
    integration = DjangoIntegration(middleware)
    integration.load_middleware()
    try:
        return WebSocketMiddleware(app, routes, integration=integration, **options)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"settings.{SETTING}: {exc}") from exc


def get_wsgi_application() -> WebSocketMiddleware:
    """Django's WSGI application with the WebSocket routes of ``settings.WSMIDDLEWARE``.

    The drop-in replacement of ``django.core.wsgi.get_wsgi_application`` in
    ``wsgi.py``: it sets Django up the same way, then wraps the application.
    """
    from django.core.wsgi import get_wsgi_application as django_application

    return from_settings(django_application())


def _route(template: str, value: Any) -> Any:
    """One ROUTES entry: a handler (dotted path or object), or a ``(handler, {options})`` pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not isinstance(value[1], Mapping):
            raise ImproperlyConfigured(f"settings.{SETTING}['ROUTES'][{template!r}]: expected a handler or a "
                                       f"(handler, {{options}}) pair, got {value!r}")
        return (_handler(template, value[0]), dict(value[1]))
    return _handler(template, value)


def _handler(template: str, value: Any) -> WS | type[WS]:
    target = value
    if isinstance(value, str):
        try:
            target = import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(f"settings.{SETTING}['ROUTES'][{template!r}]: cannot import "
                                       f"{value!r}: {exc}") from exc
    if isinstance(target, WS) or (isinstance(target, type) and issubclass(target, WS)):
        return target
    raise ImproperlyConfigured(f"settings.{SETTING}['ROUTES'][{template!r}]: {value!r} is not a "
                               f"wsmiddleware.WS subclass or instance")
