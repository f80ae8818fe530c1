"""The example in one command: migrate, then serve on gevent.pywsgi.

    python examples/django_project/serve.py [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000/ and log in as alice (password ``wonderland``) or bob
(``builder``), in two browsers, to chat. The database is a SQLite file
(``CHAT_DB``, default: ``wsmiddleware-django-chat.sqlite3`` in the temp directory).
For production, the same project under gunicorn:

    python examples/django_project/manage.py migrate
    gunicorn -k gevent --chdir examples/django_project mysite.wsgi
"""

from gevent import monkey

monkey.patch_all()  # before Django and the database drivers are imported

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from django.core.management import call_command  # noqa: E402
from mysite.wsgi import application  # noqa: E402  (sets Django up)

from wsmiddleware.server import main  # noqa: E402

if __name__ == "__main__":
    call_command("migrate", interactive=False, verbosity=0)
    main(application, description="Django chat on wsmiddleware", label="Django chat")
