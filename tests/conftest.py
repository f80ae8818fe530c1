"""Fixtures: real servers on free loopback ports, started as child processes."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable

import pytest

from .support import ServerProcess, start_server

# gunicorn 25+ opens a control socket at one fixed path per user: the many gunicorns
# the tests start side by side would fight over it. They need none.
os.environ.setdefault("GUNICORN_CMD_ARGS", "--no-control-socket")


@pytest.fixture(scope="session")
def pywsgi() -> ServerProcess:
    server = start_server("pywsgi")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gunicorn_gevent() -> ServerProcess:
    server = start_server("gunicorn")
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["pywsgi", "gunicorn"])
def server(request, pywsgi, gunicorn_gevent) -> ServerProcess:
    """The two main servers: each test using it runs against both."""
    return pywsgi if request.param == "pywsgi" else gunicorn_gevent


def events(server: ServerProcess, key: str) -> list:
    with urllib.request.urlopen(f"{server.http}/events?id={key}", timeout=5) as response:
        return json.loads(response.read())


from .redis_support import fresh_redis, redis_server  # noqa: E402,F401  (pub/sub tests: a real redis-server)


def wait_events(server: ServerProcess, key: str, predicate: Callable[[list], bool], timeout: float = 5.0,
                sleep: Callable[[float], None] = time.sleep) -> list:
    """Poll the server's events for ``key`` until ``predicate`` holds or ``timeout`` passes.

    A test process running gevent clients passes ``gevent.sleep`` so they keep going.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = events(server, key)
        if predicate(found) or time.monotonic() > deadline:
            return found
        sleep(0.05)
