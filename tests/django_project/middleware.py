"""Two middlewares of the test project: one answers by itself, one marks the request."""

from django.http import HttpResponse


class Maintenance:
    """Answers every request under /ws/closed itself: the handshake's refusal."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/ws/closed"):
            response = HttpResponse("closed for maintenance\n", status=503, content_type="text/plain")
            response["Retry-After"] = "30"
            response.set_cookie("maintenance", "on")
            return response
        return self.get_response(request)


class Marker:
    """Leaves a mark on the request that on_handshake can see."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.marker = "seen by Marker"
        return self.get_response(request)
