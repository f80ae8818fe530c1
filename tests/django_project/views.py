"""Plain views of the test project: log in, list notes, count database connections, error pages."""

import json

from django.contrib.auth import authenticate, login
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from . import dbcount
from .handlers import login_not_required
from .wsapp.models import Note


@csrf_exempt
@login_not_required
def login_view(request):
    user = authenticate(request, username=request.POST.get("username"), password=request.POST.get("password"))
    if user is None:
        return HttpResponse("bad credentials\n", status=401, content_type="text/plain")
    login(request, user)
    return HttpResponse(f"logged in as {user.get_username()}\n", content_type="text/plain")


@login_not_required
def notes(request):
    return JsonResponse({"notes": [[n.room.name if n.room else None, n.author.username if n.author else None, n.text]
                                   for n in Note.objects.select_related("room", "author").order_by("pk")]})


@login_not_required
def db_connections(request):
    return HttpResponse(json.dumps({"open": dbcount.open_connections(), "created": dbcount.created}),
                        content_type="application/json")


def forbidden(request, exception):
    return HttpResponse(f"project 403: {exception}\n", status=403, content_type="text/plain")


def not_found(request, exception):
    return HttpResponse(f"project 404: {exception}\n", status=404, content_type="text/plain")


def server_error(request):
    return HttpResponse("project 500\n", status=500, content_type="text/plain")
