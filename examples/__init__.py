"""Runnable examples; importable so that gunicorn can load ``examples.NAME:application``."""
