"""The data the tests log in with and talk about: user alice (password "secret"), room "lobby"."""

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations


def create(apps, schema_editor):
    user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    user_model.objects.create(username="alice", password=make_password("secret"))
    apps.get_model("wsapp", "Room").objects.create(name="lobby")


class Migration(migrations.Migration):
    dependencies = [("wsapp", "0001_initial"), migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
