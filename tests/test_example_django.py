"""examples/django_project: the chat, started the two documented ways, driven like a browser would."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .support import BIN, PYTHON, ROOT, ServerProcess, free_port

pytest.importorskip("django")

PROJECT = ROOT / "examples" / "django_project"


def fetch(port: int, method: str, path: str, body: str | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response, response.read().decode()
    finally:
        conn.close()


def cookies_of(response: http.client.HTTPResponse) -> dict[str, str]:
    pairs = (value.split(";", 1)[0].split("=", 1) for value in response.msg.get_all("Set-Cookie") or [])
    return {name: value for name, value in pairs}


def log_in(port: int, username: str, password: str) -> str:
    """Django's LoginView, CSRF token and all; returns the Cookie header of the session."""
    status, response, page = fetch(port, "GET", "/accounts/login/")
    assert status == 200
    jar = cookies_of(response)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = f"csrfmiddlewaretoken={token}&username={username}&password={password}&next=/room/lobby/"
    status, response, _ = fetch(port, "POST", "/accounts/login/", form, {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"csrftoken={jar['csrftoken']}",
    })
    assert status == 302 and response.getheader("Location") == "/room/lobby/"
    jar.update(cookies_of(response))
    return "; ".join(f"{name}={value}" for name, value in jar.items())


def chat_round(port: int) -> None:
    """alice and bob log in, see the page, talk; history and refusals as the example promises."""
    alice = log_in(port, "alice", "wonderland")
    status, _, page = fetch(port, "GET", "/room/lobby/", headers={"Cookie": alice})
    assert status == 200 and "new WebSocket" in page and "<b>alice</b>" in page
    url = f"ws://127.0.0.1:{port}/ws/chat/lobby"
    with connect(url, additional_headers={"Cookie": alice}, open_timeout=10) as alice_ws:
        alice_ws.send("hello bob")
        assert json.loads(alice_ws.recv(timeout=5))["text"] == "hello bob"
        bob = log_in(port, "bob", "builder")
        with connect(url, additional_headers={"Cookie": bob}, open_timeout=10) as bob_ws:
            history = json.loads(bob_ws.recv(timeout=5))  # from the database, on open
            assert (history["user"], history["text"]) == ("alice", "hello bob")
            bob_ws.send("hi alice")
            for ws in (alice_ws, bob_ws):
                message = json.loads(ws.recv(timeout=5))
                assert (message["user"], message["text"]) == ("bob", "hi alice")
    with pytest.raises(InvalidStatus) as refused:
        with connect(url, open_timeout=10):
            pass
    assert refused.value.response.status_code == 403  # anonymous: PermissionDenied in on_handshake
    with pytest.raises(InvalidStatus) as refused:
        with connect(f"ws://127.0.0.1:{port}/ws/chat/Not%20a%20slug", additional_headers={"Cookie": alice},
                     open_timeout=10):
            pass
    assert refused.value.response.status_code == 404


def assert_clean(log: str) -> None:
    """No error logged; the only tracebacks are those Django logs with a PermissionDenied (as for a view)."""
    assert " ERROR " not in log, log
    assert log.count("Traceback") == log.count("Forbidden (Permission denied)"), log


def test_serve_script_runs_the_chat(tmp_path):
    port = free_port()
    server = ServerProcess([PYTHON, str(PROJECT / "serve.py"), "--port", str(port)], port, name="example-django",
                           env={"CHAT_DB": str(tmp_path / "chat.sqlite3"), "DJANGO_DEBUG": "0"})
    try:
        chat_round(port)
    finally:
        assert server.stop() is not None
    assert_clean(server.log_path.read_text())


def test_gunicorn_serves_the_project_wsgi(tmp_path):
    env = dict(os.environ, CHAT_DB=str(tmp_path / "chat.sqlite3"), PYTHONPATH=str(ROOT))
    subprocess.run([PYTHON, str(PROJECT / "manage.py"), "migrate", "--noinput"], check=True, env=env,
                   capture_output=True, timeout=60)
    port = free_port()
    server = ServerProcess([str(BIN / "gunicorn"), "-k", "gevent", "--chdir", str(PROJECT), "-b", f"127.0.0.1:{port}",
                            "mysite.wsgi"], port, name="example-django-gunicorn",
                           env={"CHAT_DB": env["CHAT_DB"], "DJANGO_DEBUG": "0"})
    try:
        chat_round(port)
    finally:
        assert server.stop() is not None
    assert_clean(server.log_path.read_text())
