"""Demo users alice (password "wonderland") and bob ("builder"). Not for a real project: drop this file."""

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations

DEMO_USERS = {"alice": "wonderland", "bob": "builder"}


def create(apps, schema_editor):
    user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    for username, password in DEMO_USERS.items():
        user_model.objects.get_or_create(username=username, defaults={"password": make_password(password)})


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial"), migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
