from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("notes/", views.notes, name="notes"),
    path("debug/db/", views.db_connections, name="db"),
]

handler403 = "tests.django_project.views.forbidden"
handler404 = "tests.django_project.views.not_found"
handler500 = "tests.django_project.views.server_error"
