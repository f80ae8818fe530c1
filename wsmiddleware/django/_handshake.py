"""The opening handshake as a Django request: ``settings.MIDDLEWARE`` around ``on_handshake``.

The chain is built the way Django's ``BaseHandler.load_middleware`` builds it
(checked against Django 4.2 to 5.2): every middleware factory gets the next
``get_response``, each layer is wrapped in ``convert_exception_to_response``
(so ``PermissionDenied`` and ``Http404`` become the project's 403/404 pages),
``MiddlewareNotUsed`` skips one, and ``process_view`` / ``process_exception`` /
``process_template_response`` hooks run around the innermost callable. That
innermost callable stands where Django resolves and calls a view: it calls
``on_handshake`` with the processed ``HttpRequest``.

``convert_exception_to_response`` and ``response_for_exception`` live in
``django.core.handlers.exception``; they are what Django's own WSGI and ASGI
handlers (and the test client) use to render an exception as the project would,
so the handshake's 403/404/500 are the pages of ``handler403`` and friends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import ResolverMatch, set_urlconf
from django.utils.module_loading import import_string

from ..exceptions import HandshakeError

__all__ = ["Pending", "Chain", "WSGIResponse"]

logger = logging.getLogger("wsmiddleware.django")

#: Attribute of the HttpRequest that carries one handshake through the chain.
PENDING_ATTR = "_wsmiddleware_handshake"


class Pending:
    """One handshake on its way through the middleware: what goes in and what comes out."""

    __slots__ = ("on_handshake", "url_vars", "accepted", "answer", "raised")

    def __init__(self, on_handshake: Callable[[Any], Any], url_vars: dict[str, Any]) -> None:
        self.on_handshake = on_handshake
        self.url_vars = url_vars
        # What the innermost callable returns when on_handshake accepts (or defers to
        # the core), for the middleware to process like any response. Status 101:
        # what the client will get; and no cache middleware stores a 101 (a 200 would
        # be cached by UpdateCacheMiddleware and served to the next handshake).
        self.accepted = HttpResponse(status=101)
        self.answer: Any = None
        self.raised: BaseException | None = None


class Chain:
    """``middleware`` (dotted paths, outermost first) built once around the handshake."""

    def __init__(self, middleware: Sequence[str]) -> None:
        self._view_hooks: list[Callable[..., Any]] = []
        self._exception_hooks: list[Callable[..., Any]] = []
        self._template_hooks: list[Callable[..., Any]] = []
        handler: Callable[[HttpRequest], Any] = convert_exception_to_response(self._view)
        for path in reversed(middleware):
            factory = import_string(path)
            can_sync = getattr(factory, "sync_capable", True)
            if not can_sync and not getattr(factory, "async_capable", False):
                raise RuntimeError(f"Middleware {path} must have at least one of sync_capable/async_capable set to True.")
            # The handshake runs synchronously, in the connection's greenlet, as a
            # WSGIHandler request does; an async-only middleware is adapted the same way.
            get_response = handler if can_sync else sync_to_async(handler, thread_sensitive=True)
            try:
                instance = factory(get_response)
            except MiddlewareNotUsed as exc:
                if settings.DEBUG:
                    logger.debug("MiddlewareNotUsed(%r)%s", path, f": {exc}" if str(exc) else "")
                continue
            if instance is None:
                raise ImproperlyConfigured(f"Middleware factory {path} returned None.")
            if hasattr(instance, "process_view"):
                self._view_hooks.insert(0, _sync(instance.process_view))
            if hasattr(instance, "process_template_response"):
                self._template_hooks.append(_sync(instance.process_template_response))
            if hasattr(instance, "process_exception"):
                self._exception_hooks.append(_sync(instance.process_exception))
            handler = convert_exception_to_response(_sync(instance))
        self._handler = handler

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self._handler(request)

    def _view(self, request: HttpRequest) -> HttpResponseBase:
        """Where Django would resolve and call the view: ``on_handshake`` is the view."""
        pending: Pending = getattr(request, PENDING_ATTR)
        view = pending.on_handshake
        if hasattr(request, "urlconf"):  # set by a middleware, as BaseHandler.resolve_request honours it
            set_urlconf(request.urlconf)
        # The route's variables where Django users look for a view's: resolver_match.kwargs.
        request.resolver_match = ResolverMatch(view, (), dict(pending.url_vars))
        for hook in self._view_hooks:
            # process_view sees on_handshake as the view: login_not_required,
            # csrf_exempt and similar decorators on it are honoured.
            response = hook(request, view, (), dict(pending.url_vars))
            if response:
                return self._rendered(response, request)
        try:
            answer = _atomic(view)(request)
        except Exception as exc:
            # The core's own contract (HandshakeError, a raised WSGI response such as
            # webob.exc) passes Django by: the core renders it.
            if isinstance(exc, HandshakeError) or callable(exc):
                pending.raised = exc
                return pending.accepted
            response = self._process_exception(exc, request)
            if response is None:
                raise  # convert_exception_to_response renders it: 403, 404, 400, 500
            return self._rendered(response, request)
        if isinstance(answer, HttpResponseBase):
            return self._rendered(answer, request)  # a Django response refuses, through the middleware
        pending.answer = answer
        return pending.accepted

    def _process_exception(self, exc: Exception, request: HttpRequest) -> HttpResponseBase | None:
        for hook in self._exception_hooks:
            response = hook(request, exc)
            if response:
                return response
        return None

    def _rendered(self, response: Any, request: HttpRequest) -> Any:
        """Template response middleware, then render, as Django does for a view's TemplateResponse."""
        if hasattr(response, "render") and callable(response.render):
            for hook in self._template_hooks:
                response = hook(request, response)
                if response is None:
                    raise ValueError(f"{getattr(hook, '__qualname__', hook)} didn't return an HttpResponse object. It returned None instead.")
            try:
                response = response.render()
            except Exception as exc:
                response = self._process_exception(exc, request)
                if response is None:
                    raise
        return response


def _sync(method: Callable[..., Any]) -> Callable[..., Any]:
    return async_to_sync(method) if iscoroutinefunction(method) else method


def _atomic(view: Callable[..., Any]) -> Callable[..., Any]:
    """``ATOMIC_REQUESTS`` applies to on_handshake as to a view (``non_atomic_requests`` opts out)."""
    non_atomic: set[str] = getattr(view, "_non_atomic_requests", set())
    for alias, database in settings.DATABASES.items():
        if database.get("ATOMIC_REQUESTS") and alias not in non_atomic:
            view = transaction.atomic(using=alias)(view)
    return view


class WSGIResponse:
    """A Django response as the WSGI app the core sends as the rejection, as ``WSGIHandler`` sends it.

    Status, headers and cookies as Django's handler gives them to
    ``start_response``; the body is the response itself, whose ``close()`` (the
    core calls it) ends the request: ``request_finished`` is sent.
    """

    __slots__ = ("response",)

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response

    def __repr__(self) -> str:
        return f"<Django {type(self.response).__name__} {self.response.status_code}>"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        response = self.response
        headers = [
            *response.items(),
            *(("Set-Cookie", cookie.output(header="").strip()) for cookie in response.cookies.values()),
        ]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return response
