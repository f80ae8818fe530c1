"""The WebSocket handlers of the test project (``settings.WSMIDDLEWARE["ROUTES"]``)."""

from __future__ import annotations

import json

import webob.exc
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse

from wsmiddleware import WS, HandshakeError
from wsmiddleware.django import closing_db_connections

from .wsapp.models import Note
from .wsapp.models import Room as RoomModel

try:
    from django.contrib.auth.decorators import login_not_required
except ImportError:  # Django < 5.1: no LoginRequiredMiddleware either

    def login_not_required(view):
        return view


class WhoAmI(WS):
    """Logged-in users only (PermissionDenied otherwise); says who they are."""

    @login_not_required  # the check is ours: PermissionDenied, not LoginRequiredMiddleware's redirect
    def on_handshake(self, request):
        if not request.user.is_authenticated:
            raise PermissionDenied("log in first")
        request.environ["wsmiddleware.state"]["marker"] = getattr(request, "marker", None)
        request.environ["wsmiddleware.state"]["session_user"] = request.session.get("_auth_user_id")
        return None

    def on_open(self, websocket):
        user = websocket.state["user"]
        websocket.write(json.dumps({
            "user": user.get_username(),
            "marker": websocket.state["marker"],
            "session_user": websocket.state["session_user"],
            "user_type": type(user).__name__,
        }))

    def on_message(self, websocket, message):
        websocket.write(f"{websocket.state['user'].get_username()}: {message}")


class Private(WS):
    """No check of its own: LoginRequiredMiddleware (Django 5.1+) guards it."""

    def on_open(self, websocket):
        websocket.write(websocket.state["user"].get_username())


class Room(WS):
    """``get_object_or_404`` in the handshake; ORM writes from on_message."""

    @login_not_required
    def on_handshake(self, request):
        room = get_object_or_404(RoomModel, name=request.resolver_match.kwargs["room"])
        request.environ["wsmiddleware.state"]["room_id"] = room.pk

    def on_message(self, websocket, message):
        room = RoomModel.objects.get(pk=websocket.state["room_id"])
        user = websocket.state.get("user")
        Note.objects.create(room=room, text=message, author=user if user and user.is_authenticated else None)
        websocket.write(str(Note.objects.filter(room=room).count()))


class Notes(WS):
    """One ORM write and one read per message; the bounded-connections test drives it."""

    @login_not_required
    def on_handshake(self, request):
        return None

    def on_message(self, websocket, message):
        Note.objects.create(text=message)
        count = Note.objects.count()
        websocket.write(f"{count} {connection.vendor}")


class Producer(WS):
    """A greenlet of its own (websocket.spawn) reads the database and reports."""

    @login_not_required
    def on_handshake(self, request):
        return None

    def on_open(self, websocket):
        websocket.spawn(closing_db_connections(self.report), websocket)

    @staticmethod
    def report(websocket):
        websocket.write(f"{Note.objects.count()} notes")


class Cases(WS):
    """``?case=`` picks what on_handshake does."""

    subprotocols = ["v1"]

    @login_not_required
    def on_handshake(self, request):
        case = request.GET.get("case", "none")
        if case == "permission":
            raise PermissionDenied("no entry for you")
        if case == "404":
            raise Http404("no such thing")
        if case == "django-response":
            response = HttpResponse("django says no\n", status=409, content_type="text/plain")
            response.set_cookie("refused", "yes")
            return response
        if case == "handshake-error":
            raise HandshakeError("slow down", 429)
        if case == "webob":
            return webob.exc.HTTPGone("gone")
        if case == "false":
            return False
        if case == "boom":
            raise ValueError("boom in on_handshake")
        if case == "subprotocol":
            return "v1"
        return None

    def on_open(self, websocket):
        # reverse() in a callback (a greenlet of its own under pywsgi), with the route's variables.
        websocket.write(json.dumps({"notes_url": reverse("notes"), "subprotocol": websocket.subprotocol}))


cases = Cases()
