from django.apps import AppConfig


class WsAppConfig(AppConfig):
    name = "tests.django_project.wsapp"
    label = "wsapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .. import dbcount

        dbcount.install()
