"""The test project's WSGI application, as a project's ``wsgi.py`` is written with wsmiddleware.

``WSM_DJANGO_NO_CLOSE=1`` serves it with an integration that does not look after
database connections in callbacks: the control of the bounded-connections test.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

from wsmiddleware.django import DjangoIntegration, get_wsgi_application  # noqa: E402

application = get_wsgi_application()

if os.environ.get("WSM_DJANGO_NO_CLOSE"):
    import gc

    # Only the cycle collector frees what is left open (Django's connection wrappers
    # sit in reference cycles): with it off the control shows the whole history,
    # instead of whatever a collection happened to leave.
    gc.disable()

    class CallbacksAsIs(DjangoIntegration):
        def callback(self, websocket, callback, *args):
            callback(websocket, *args)

    application.integration = CallbacksAsIs()
