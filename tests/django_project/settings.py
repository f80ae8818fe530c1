"""Settings of the test project. The database is a SQLite file named by ``WSM_DJANGO_DB``."""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "only-for-the-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "tests.django_project.wsapp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tests.django_project.middleware.Maintenance",
    "tests.django_project.middleware.Marker",
]
if django.VERSION >= (5, 1):
    # Its process_view redirects anonymous users unless the view (on_handshake) is login_not_required.
    MIDDLEWARE.append("django.contrib.auth.middleware.LoginRequiredMiddleware")

ROOT_URLCONF = "tests.django_project.urls"
LOGIN_URL = "/login/"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("WSM_DJANGO_DB", str(BASE_DIR / "db.sqlite3")),
        "CONN_MAX_AGE": int(os.environ.get("WSM_DJANGO_CONN_MAX_AGE", "0")),
        "OPTIONS": {"timeout": 20},
    }
}
USE_TZ = True

WSMIDDLEWARE = {
    "ROUTES": {
        "/ws/whoami": "tests.django_project.handlers.WhoAmI",
        "/ws/private": "tests.django_project.handlers.Private",
        "/ws/closed": "tests.django_project.handlers.WhoAmI",
        "/ws/room/{room}": "tests.django_project.handlers.Room",
        "/ws/notes": "tests.django_project.handlers.Notes",
        "/ws/producer": "tests.django_project.handlers.Producer",
        "/ws/cases": ("tests.django_project.handlers.cases", {"max_message_size": 4096}),
    },
    "OPTIONS": {"ping_interval": None},
}

# gunicorn configures only its own loggers: show ours with names and levels.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "wsmiddleware": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# Fast hashing: the tests log in often, and security is not what they test.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
