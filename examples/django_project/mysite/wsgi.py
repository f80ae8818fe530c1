"""WSGI entry point: Django's application with the WebSocket routes of ``settings.WSMIDDLEWARE``.

    gunicorn -k gevent --chdir examples/django_project mysite.wsgi

``wsmiddleware.django.get_wsgi_application`` replaces Django's own: it sets
Django up the same way and wraps the application in ``WebSocketMiddleware``.
gunicorn's gevent worker monkey-patches before it imports this module; other
gevent servers must patch first too (``serve.py`` does).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from wsmiddleware.django import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
