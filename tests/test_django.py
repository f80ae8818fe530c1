"""``wsmiddleware.django`` end to end: the test project (tests/django_project) under real servers.

The handshake goes through the project's middleware (sessions, authentication,
a middleware that answers by itself, LoginRequiredMiddleware on Django 5.1+);
``PermissionDenied``/``Http404`` give the project's 403/404 pages; callbacks use
the ORM; and the open database connections stay bounded across park/wake cycles,
which a control server without the integration's closing shows they would not.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from wsmiddleware._reading import PARK_AFTER

from .support import PYTHON, ROOT, ServerProcess, read_http_response, start_server, upgrade_request

django = pytest.importorskip("django")

APP = "tests.django_project.wsgi:application"
SETTINGS = "tests.django_project.settings"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """A migrated SQLite file (user alice, room lobby) that each server gets a copy of."""
    path = tmp_path_factory.mktemp("django") / "template.sqlite3"
    subprocess.run([PYTHON, "-m", "django", "migrate", "--noinput"], cwd=ROOT, check=True, capture_output=True,
                   timeout=60, env=_env(path))
    return path


def _env(db: Path, **extra: str) -> dict[str, str]:
    import os

    env = dict(os.environ, DJANGO_SETTINGS_MODULE=SETTINGS, WSM_DJANGO_DB=str(db), PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def django_server(kind: str, template: Path, **env: str) -> ServerProcess:
    db = template.with_name(f"{kind}-{uuid.uuid4().hex[:8]}.sqlite3")
    shutil.copy(template, db)
    return start_server(kind, app=APP, env={"DJANGO_SETTINGS_MODULE": SETTINGS, "WSM_DJANGO_DB": str(db), **env})


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def server(request, template_db) -> ServerProcess:
    started = django_server(request.param, template_db)
    yield started
    started.stop()


# -- helpers -------------------------------------------------------------------------------


def fetch(server: ServerProcess, method: str, path: str, body: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response, response.read()
    finally:
        conn.close()


def login(server: ServerProcess, username: str = "alice", password: str = "secret") -> str:
    """Log in over HTTP; the Cookie header that carries the session."""
    status, response, body = fetch(server, "POST", "/login/", f"username={username}&password={password}",
                                  {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, body
    cookies = [value.split(";", 1)[0] for value in response.msg.get_all("Set-Cookie") or []]
    assert any(cookie.startswith("sessionid=") for cookie in cookies), cookies
    return "; ".join(cookies)


def ask(server: ServerProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One raw upgrade request (no redirect following); status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(upgrade_request(path, server.port, headers=headers))
        return read_http_response(sock)


def set_cookies(raw_headers: dict[str, str]) -> str:
    return raw_headers.get("set-cookie", "")


# -- the handshake as a Django request -----------------------------------------------------


def test_anonymous_user_gets_the_projects_403(server):
    status, headers, body = ask(server, "/ws/whoami")
    assert status == 403
    assert body == b"project 403: log in first\n"  # handler403 of the project's urls.py
    assert headers["x-content-type-options"] == "nosniff"  # SecurityMiddleware processed the refusal


def test_logged_in_user_reaches_on_handshake_and_the_connection(server):
    cookie = login(server)
    with connect(f"{server.url}/ws/whoami", additional_headers={"Cookie": cookie}, open_timeout=5) as ws:
        hello = json.loads(ws.recv(timeout=5))
        assert hello == {"user": "alice", "marker": "seen by Marker", "session_user": hello["session_user"],
                         "user_type": "User"}
        assert hello["session_user"]  # request.session was loaded by SessionMiddleware
        ws.send("hi")
        assert ws.recv(timeout=5) == "alice: hi"


def test_a_forged_session_is_anonymous(server):
    status, _, body = ask(server, "/ws/whoami", {"Cookie": "sessionid=not-a-session"})
    assert (status, body) == (403, b"project 403: log in first\n")


@pytest.mark.skipif(django.VERSION < (5, 1), reason="LoginRequiredMiddleware is new in Django 5.1")
def test_login_required_middleware_guards_handlers_without_login_not_required(server):
    status, headers, _ = ask(server, "/ws/private")
    assert status == 302
    assert headers["location"] == "/login/?next=/ws/private"
    with connect(f"{server.url}/ws/private", additional_headers={"Cookie": login(server)}, open_timeout=5) as ws:
        assert ws.recv(timeout=5) == "alice"


def test_http404_in_on_handshake_gives_the_projects_404(server):
    status, _, body = ask(server, "/ws/room/nowhere")  # get_object_or_404 in on_handshake
    assert (status, body) == (404, b"project 404: No Room matches the given query.\n")
    status, _, body = ask(server, "/ws/cases?case=404")
    assert (status, body) == (404, b"project 404: no such thing\n")


def test_a_middleware_that_answers_itself_is_the_refusal(server):
    status, headers, body = ask(server, "/ws/closed")
    assert (status, body) == (503, b"closed for maintenance\n")
    assert headers["retry-after"] == "30"
    assert set_cookies(headers).startswith("maintenance=on")


@pytest.mark.parametrize(("case", "status", "body"), [
    ("permission", 403, b"project 403: no entry for you\n"),
    ("django-response", 409, b"django says no\n"),
    ("handshake-error", 429, b"slow down\n"),  # the core's contract passes Django by
    ("false", 403, b"WebSocket connection refused by the application\n"),
    ("boom", 500, b"project 500\n"),  # handler500, as for a view that raises
])
def test_what_on_handshake_returns_or_raises(server, case, status, body):
    got_status, headers, got_body = ask(server, f"/ws/cases?case={case}")
    assert (got_status, got_body) == (status, body)
    if case == "django-response":
        assert set_cookies(headers).startswith("refused=yes")  # cookies of a Django response reach the client


def test_a_webob_response_still_refuses(server):
    status, _, body = ask(server, "/ws/cases?case=webob")
    assert status == 410 and b"gone" in body


def test_an_exception_in_on_handshake_is_logged_by_django(server):
    ask(server, "/ws/cases?case=boom")
    deadline = time.monotonic() + 5
    while "ValueError: boom in on_handshake" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "django.request ERROR Internal Server Error: /ws/cases" in server.log()
    assert "ValueError: boom in on_handshake" in server.log()


def test_subprotocol_route_options_and_reverse_in_a_callback(server):
    with connect(f"{server.url}/ws/cases?case=subprotocol", subprotocols=["v1"], open_timeout=5) as ws:
        assert ws.subprotocol == "v1"
        assert json.loads(ws.recv(timeout=5)) == {"notes_url": "/notes/", "subprotocol": "v1"}
        ws.send("x" * 5000)  # the route's max_message_size from settings: 4096
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1009


def test_orm_from_on_message(server):
    cookie = login(server)
    with connect(f"{server.url}/ws/room/lobby", additional_headers={"Cookie": cookie}, open_timeout=5) as ws:
        counts = []
        for text in ("one", "two", "three"):
            ws.send(f"{server.name} {text}")
            counts.append(int(ws.recv(timeout=5)))
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]
    status, _, body = fetch(server, "GET", "/notes/")
    assert status == 200
    notes = json.loads(body)["notes"]
    assert [note for note in notes if note[2].startswith(server.name)] == [
        ["lobby", "alice", f"{server.name} one"], ["lobby", "alice", f"{server.name} two"],
        ["lobby", "alice", f"{server.name} three"],
    ]


def test_greenlets_of_the_handler_look_after_their_connections(server):
    for _ in range(6):
        with connect(f"{server.url}/ws/producer", open_timeout=5) as ws:
            assert ws.recv(timeout=5).endswith(" notes")
    wait_until(lambda: db_counts(server)["open"] == 0)
    assert db_counts(server)["open"] == 0  # nor did any test before this one leave a connection open


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_plain_django_requests_pass_through(server):
    status, _, body = fetch(server, "GET", "/notes/")
    assert status == 200 and b"notes" in body
    status, _, body = fetch(server, "GET", "/no/such/page/")
    assert status == 404 and body.startswith(b"project 404")


# -- database connections across park/wake cycles ---------------------------------------------

SOCKETS = 4
CYCLES = 3  # message bursts; between two, every connection parks (its reader greenlet ends)
PER_BURST = 17  # per socket: 4 x 3 x 17 = 204 messages
IDLE = PARK_AFTER + 0.3


def db_counts(server: ServerProcess) -> dict[str, int]:
    return json.loads(fetch(server, "GET", "/debug/db/")[2])


def drive(server: ServerProcess) -> dict:
    """Bursts of ORM messages on SOCKETS connections, idle in between; the connection counts seen."""
    seen: dict = {"busy": [], "messages": 0}
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(connect(f"{server.url}/ws/notes", open_timeout=5)) for _ in range(SOCKETS)]
        for _ in range(CYCLES):
            for _ in range(PER_BURST):
                for ws in sockets:
                    ws.send("note")
                    assert ws.recv(timeout=5).endswith(" sqlite")
                    seen["messages"] += 1
            seen["busy"].append(db_counts(server)["open"])  # reader greenlets still alive
            time.sleep(IDLE)
        seen["idle"] = db_counts(server)
    return seen


@pytest.fixture(scope="module")
def db_runs(template_db) -> dict[str, dict]:
    """The same workload against four servers at once (the idle waits overlap)."""
    variants = {
        "pywsgi": ("pywsgi", {}),
        "pywsgi-persistent": ("pywsgi", {"WSM_DJANGO_CONN_MAX_AGE": "60"}),
        "pywsgi-control": ("pywsgi", {"WSM_DJANGO_NO_CLOSE": "1"}),
        "gunicorn": ("gunicorn", {}),
    }
    servers: dict[str, ServerProcess] = {}
    results: dict[str, dict] = {}
    errors: list[BaseException] = []

    def in_parallel(work, names) -> None:
        def guarded(name: str) -> None:
            try:
                work(name)
            except BaseException as exc:  # re-raised below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=guarded, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

    def start(name: str) -> None:
        kind, env = variants[name]
        servers[name] = django_server(kind, template_db, **env)

    def run(name: str) -> None:
        results[name] = drive(servers[name])

    try:
        in_parallel(start, variants)
        if not errors:
            in_parallel(run, variants)
    finally:
        in_parallel(lambda name: servers[name].stop(), list(servers))
    if errors:
        raise errors[0]
    return results


def test_callbacks_close_their_connections(db_runs):
    run = db_runs["pywsgi"]
    assert run["messages"] == SOCKETS * CYCLES * PER_BURST
    assert run["idle"]["open"] == 0
    assert max(run["busy"]) <= 1
    assert run["idle"]["created"] >= run["messages"]  # CONN_MAX_AGE = 0: one connection per callback


def test_persistent_connections_live_as_long_as_their_greenlet(db_runs):
    run = db_runs["pywsgi-persistent"]
    # CONN_MAX_AGE = 60 is honoured: a reader greenlet keeps its connection for
    # its messages, and each park/wake cycle starts a new greenlet ...
    assert SOCKETS * CYCLES <= run["idle"]["created"] <= SOCKETS * CYCLES + 2
    assert max(run["busy"]) <= SOCKETS
    # ... whose connection is closed when it ends: none stays behind.
    assert run["idle"]["open"] <= 1


def test_control_without_the_integrations_closing_grows_with_history(db_runs):
    run = db_runs["pywsgi-control"]
    # Without closing, every reader greenlet that used the ORM leaves its
    # connection open until garbage collection: the count follows the history.
    assert run["busy"] == [SOCKETS * cycle for cycle in range(1, CYCLES + 1)]
    assert run["idle"]["open"] == SOCKETS * CYCLES


def test_gunicorn_callbacks_close_their_connections(db_runs):
    run = db_runs["gunicorn"]
    assert run["idle"]["open"] == 0
    assert run["idle"]["created"] >= run["messages"]


# -- configuration -----------------------------------------------------------------------------

SETTINGS_CHECK = r"""
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=[], MIDDLEWARE=[], ROOT_URLCONF=[])
django.setup()
from django.core.exceptions import ImproperlyConfigured
from django.test.utils import override_settings
from wsmiddleware.django import from_settings

CASES = [
    ["ROUTES"],
    {"ROUTE": {}},
    {"ROUTES": {"/ws": "no.such.module.Handler"}},
    {"ROUTES": {"/ws": "json.dumps"}},
    {"ROUTES": {"/ws": ("wsmiddleware.WS", 3)}},
    {"ROUTES": {"/ws": "wsmiddleware.PubSubWS"}},
    {"OPTIONS": {"ping_intervall": 3}},
    {"MIDDLEWARE": "django.middleware.common.CommonMiddleware"},
]
for case in CASES:
    with override_settings(WSMIDDLEWARE=case):
        try:
            from_settings(None)
        except ImproperlyConfigured as exc:
            print("refused:", exc)
        else:
            print("accepted:", case)
with override_settings(WSMIDDLEWARE={"ROUTES": {"/ws/a": "wsmiddleware.WS", "/ws/b": ("wsmiddleware.WS", {"max_message_size": 9})}}):
    app = from_settings(None)
    print("routes:", [(r.template, r.options["options"].max_message_size) for r in app.router.routes],
          type(app.integration).__name__)
"""


def test_settings_are_checked_at_startup():
    env = {name: value for name, value in _env(Path("/nonexistent")).items() if name != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([PYTHON, "-c", SETTINGS_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    refused = [line for line in lines if line.startswith("refused:")]
    assert len(refused) == 8, done.stdout
    assert "must be a dict" in refused[0]
    assert "unknown key(s) 'ROUTE'" in refused[1]
    assert "cannot import 'no.such.module.Handler'" in refused[2]
    assert "is not a wsmiddleware.WS subclass or instance" in refused[3]
    assert "(handler, {options}) pair" in refused[4]
    assert "instantiated per connection with no arguments" in refused[5]
    assert "unknown WebSocket option(s): ping_intervall" in refused[6]
    assert "must be a list of dotted paths" in refused[7]
    assert lines[-1] == "routes: [('/ws/a', 1048576), ('/ws/b', 9)] DjangoIntegration"


def test_importing_wsmiddleware_does_not_import_django():
    code = "import sys, wsmiddleware, wsmiddleware.server; assert 'django' not in sys.modules, 'django imported'"
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, check=True, timeout=30)
