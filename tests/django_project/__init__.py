"""A Django project the integration tests serve: ``tests.django_project.wsgi:application``."""
