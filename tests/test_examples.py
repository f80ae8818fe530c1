"""The examples, run as written (scripts, gunicorn with its config, nginx in front) and in-process."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import gevent
import pytest
from websockets.exceptions import ConnectionClosed as WSConnectionClosed
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from wsmiddleware import ConnectionRejected, ConnectionTimeout
from wsmiddleware.registry import server_connections as live_connections
from wsmiddleware.testing import TestClient

from .support import BIN, PYTHON, ROOT, ServerProcess, free_port, wait_for_port

EXAMPLES = ROOT / "examples"


def start_example(name: str) -> ServerProcess:
    port = free_port()
    return ServerProcess([PYTHON, str(EXAMPLES / f"{name}.py"), "--host", "127.0.0.1", "--port", str(port)],
                         port, name=f"example-{name}")


def fetch(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# -- each example as a script: python examples/NAME.py --host H --port P ----------------------


@pytest.mark.parametrize("name", ["ticker", "rpc", "flask_app", "pyramid_app"])
def test_example_script_serves_its_page(name):
    server = start_example(name)
    try:
        status, headers, body = fetch(server.port, "GET", "/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert b"new WebSocket" in body or b"Log in" in body
    finally:
        assert server.stop() is not None
    assert "Traceback" not in server.log_path.read_text()


def test_ticker_script_pushes_ticks():
    server = start_example("ticker")
    try:
        with ws_connect(f"{server.url}/ws/ticker?interval=0.02", open_timeout=5) as ws:
            ticks = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
        assert [tick["tick"] for tick in ticks] == [1, 2, 3]
        assert ticks[0]["interval"] == 0.02
        assert ticks[0]["time"] <= ticks[1]["time"] <= ticks[2]["time"]
    finally:
        server.stop()


def test_rpc_script_routes_messages():
    server = start_example("rpc")
    try:
        with ws_connect(f"{server.url}/ws/notes", open_timeout=5) as ws:
            ws.send(json.dumps({"type": "add", "id": 1, "text": "buy milk"}))
            event = json.loads(ws.recv(timeout=5))
            reply = json.loads(ws.recv(timeout=5))
        assert event == {"type": "note_added", "note": {"id": 1, "text": "buy milk"}}
        assert reply == {"type": "result", "id": 1, "result": {"id": 1, "text": "buy milk"}}
        assert json.loads(fetch(server.port, "GET", "/notes.json")[2]) == {"1": "buy milk"}
    finally:
        server.stop()


def test_flask_script_shares_the_login_session_with_the_websocket(tmp_path):
    port = free_port()
    server = ServerProcess([PYTHON, str(EXAMPLES / "flask_app.py"), "--host", "127.0.0.1", "--port", str(port)],
                           port, name="example-flask_app",
                           env={"FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'chat.sqlite3'}"})
    try:
        with pytest.raises(InvalidStatus) as info:
            ws_connect(f"{server.url}/ws/room/lobby", open_timeout=5)
        assert info.value.response.status_code == 401
        status, headers, _ = fetch(server.port, "POST", "/login", b"name=alice",
                                  {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 302
        cookie = headers["set-cookie"].split(";", 1)[0]
        assert cookie.startswith("session=")
        with ws_connect(f"{server.url}/ws/room/lobby", additional_headers={"Cookie": cookie}, open_timeout=5) as ws:
            assert ws.recv(timeout=5) == "* alice joined"
            ws.send("hello")
            assert ws.recv(timeout=5) == "alice: hello"
            assert json.loads(fetch(server.port, "GET", "/api/rooms/lobby")[2]) == ["alice"]
        # The history came from the database in a callback: a second visit gets it first.
        with ws_connect(f"{server.url}/ws/room/lobby", additional_headers={"Cookie": cookie}, open_timeout=5) as ws:
            assert ws.recv(timeout=5) == "alice: hello"
            assert ws.recv(timeout=5) == "* alice joined"
        # A forged cookie is not a session.
        with pytest.raises(InvalidStatus):
            ws_connect(f"{server.url}/ws/room/lobby", additional_headers={"Cookie": "session=forged.value"},
                       open_timeout=5)
    finally:
        server.stop()
    assert "Traceback" not in server.log_path.read_text()


def test_pyramid_script_pushes_view_changes_to_websockets():
    server = start_example("pyramid_app")
    try:
        with ws_connect(f"{server.url}/ws/votes", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5)) == {"votes": 0, "watchers": 1}
            status, _, body = fetch(server.port, "POST", "/api/votes")
            assert status == 200 and json.loads(body) == {"votes": 1}
            assert json.loads(ws.recv(timeout=5)) == {"votes": 1, "watchers": 1}
        assert json.loads(fetch(server.port, "GET", "/api/votes")[2]) == {"votes": 1, "watchers": 0}
    finally:
        server.stop()


# -- the examples in-process, through TestClient -------------------------------------------------


def test_ticker_interval_changes_and_the_producer_dies_with_the_connection():
    from examples.ticker import application

    with TestClient(application) as client:
        ws = client.connect("/ws/ticker?interval=30")
        assert json.loads(ws.receive(timeout=2))["tick"] == 1
        servers = [c for c in live_connections() if c.path == "/ws/ticker" and c.request is not None]
        assert len(servers) == 1
        producers = list(servers[0]._greenlets)
        assert len(producers) == 1 and not producers[0].dead
        ws.send(json.dumps({"interval": 0.01}))  # cuts the 30 s wait short
        assert [json.loads(ws.receive(timeout=2))["tick"] for _ in range(3)] == [2, 3, 4]
        ws.send("not json")
        for _ in range(20):
            message = json.loads(ws.receive(timeout=2))
            if "error" in message:
                break
        assert "interval" in message["error"]
        ws.close()
        assert ws.wait_closed(2)
        for _ in range(100):
            if producers[0].dead:
                break
            gevent.sleep(0.01)
        assert producers[0].dead


def test_rpc_notes_are_shared_between_clients():
    from examples.rpc import application

    with TestClient(application) as client:
        with client.connect("/ws/notes") as alice, client.connect("/ws/notes") as bob:
            alice.send(json.dumps({"type": "add", "id": "a1", "text": "  shared  "}))
            added = json.loads(bob.receive(timeout=2))
            assert added["type"] == "note_added" and added["note"]["text"] == "shared"
            note_id = added["note"]["id"]
            assert json.loads(alice.receive(timeout=2))["type"] == "note_added"
            assert json.loads(alice.receive(timeout=2))["id"] == "a1"
            bob.send(json.dumps({"type": "list", "id": 1}))
            assert {"id": note_id, "text": "shared"} in json.loads(bob.receive(timeout=2))["result"]
            bob.send(json.dumps({"type": "delete", "id": 2, "note": note_id}))
            assert json.loads(bob.receive(timeout=2)) == {"type": "note_deleted", "note": note_id}
            assert json.loads(bob.receive(timeout=2))["result"] == {"deleted": note_id}
            assert json.loads(alice.receive(timeout=2)) == {"type": "note_deleted", "note": note_id}
            bob.send(json.dumps({"type": "delete", "id": 3, "note": note_id}))
            assert json.loads(bob.receive(timeout=2))["error"]["code"] == "not_found"
            bob.send(json.dumps({"type": "add", "id": 4, "text": "   "}))
            assert json.loads(bob.receive(timeout=2))["error"]["code"] == "invalid"


def test_flask_users_chat_in_rooms_and_logout_closes_the_door(tmp_path):
    from examples.flask_app import create_app

    application = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'chat.sqlite3'}"})
    with TestClient(application) as alice, TestClient(application) as bob:
        assert "Log in" in alice.get("/").text
        assert alice.post("/login", data={"name": "alice"}).status_int == 302
        assert bob.post("/login", data={"name": " bob  "}).status_int == 302
        assert "Logged in as <b id=\"me\">alice</b>" in alice.get("/").text
        with alice.connect("/ws/room/lobby") as a:
            assert a.receive(timeout=2) == "* alice joined"
            with bob.connect("/ws/room/lobby") as b, bob.connect("/ws/room/attic") as elsewhere:
                assert b.receive(timeout=2) == "* bob joined"
                assert a.receive(timeout=2) == "* bob joined"
                assert elsewhere.receive(timeout=2) == "* bob joined"
                assert alice.get("/api/rooms/lobby").json == ["alice", "bob"]
                b.send("hi alice")
                assert a.receive(timeout=2) == "bob: hi alice"
                assert b.receive(timeout=2) == "bob: hi alice"
                b.send("   ")  # nothing to say: not published, not stored
                elsewhere.send("up here")
                assert elsewhere.receive(timeout=2) == "bob: up here"
                with pytest.raises(ConnectionTimeout):
                    a.receive(timeout=0.2)  # another room's talk and the blank line never arrive
            assert a.receive(timeout=2) == "* bob left"
        with bob.connect("/ws/room/lobby") as b:  # the room's history, from the database
            assert [b.receive(timeout=2) for _ in range(2)] == ["bob: hi alice", "* bob joined"]
        bob.post("/logout")
        with pytest.raises(ConnectionRejected) as info:
            bob.connect("/ws/room/lobby")
        assert info.value.status == 401 and b"log in first" in info.value.body
        with pytest.raises(ConnectionRejected) as info:
            alice.connect("/ws/room/no%20spaces")
        assert info.value.status == 404
        assert bob.post("/login", data={"name": ""}).status_int == 400


def test_pyramid_votes_through_the_test_client():
    from examples.pyramid_app import application, feed

    with TestClient(application) as client:
        before = client.get("/api/votes").json["votes"]
        with client.connect("/ws/votes") as first, client.connect("/ws/votes") as second:
            assert json.loads(first.receive(timeout=2))["votes"] == before
            assert json.loads(second.receive(timeout=2))["votes"] == before
            assert client.post("/api/votes").json == {"votes": before + 1}
            assert json.loads(first.receive(timeout=2)) == {"votes": before + 1, "watchers": 2}
            assert json.loads(second.receive(timeout=2)) == {"votes": before + 1, "watchers": 2}
        assert client.get("/api/votes").status_int == 200
        assert client.delete("/api/votes").status_int == 404
    assert feed.votes == before + 1


def test_chat_rooms_through_the_test_client():
    from examples.chat import application

    with TestClient(application) as client:
        with client.connect("/ws/chat/lobby?name=tester") as ws, client.connect("/ws/chat/other") as other:
            assert json.loads(ws.receive(timeout=2))["type"] == "join"
            ws.send("hi")
            message = json.loads(ws.receive(timeout=2))
            assert (message["type"], message["name"], message["text"]) == ("message", "tester", "hi")
            assert client.post("/announce", params={"room": "lobby"}, data="from a view").json["ok"] is True
            assert json.loads(ws.receive(timeout=2))["text"] == "from a view"
            assert json.loads(other.receive(timeout=2))["type"] == "join"  # its own join, nothing else
            with pytest.raises(ConnectionTimeout):
                other.receive(timeout=0.2)
        with pytest.raises(ConnectionRejected) as info:
            client.connect("/ws/chat/bad%20room")
        assert info.value.status == 400


# -- deployment: gunicorn with examples/gunicorn.conf.py, nginx with examples/nginx.conf ---------


def start_gunicorn(app: str, env: dict[str, str]) -> ServerProcess:
    port = free_port()
    full_env = {"BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2", "GRACEFUL_TIMEOUT": "2", **env}
    argv = [str(BIN / "gunicorn"), "-c", str(EXAMPLES / "gunicorn.conf.py"), app]
    return ServerProcess(argv, port, env=full_env, name="gunicorn-conf")


def test_gunicorn_conf_runs_gevent_workers_and_stops_gracefully():
    server = start_gunicorn("examples.ticker:application", {})
    try:
        with ws_connect(f"{server.url}/ws/ticker?interval=0.05", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["tick"] == 1
            server.proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            with pytest.raises(WSConnectionClosed) as info:
                while time.monotonic() - started < 15:
                    ws.recv(timeout=15)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001  # going away
        assert server.proc.wait(15) == 0
        assert time.monotonic() - started < 10
    finally:
        server.stop()
    log = server.log_path.read_text()
    workers = set(re.findall(r"Booting worker with pid: (\d+)", log))
    assert len(workers) == 2
    assert "Using worker: gevent" in log
    assert "WSM_REDIS_URL is not set" in log


def test_gunicorn_conf_reports_the_redis_url_from_the_environment():
    server = start_gunicorn("examples.ticker:application", {"WSM_REDIS_URL": "redis://user:pw@127.0.0.1:6390/2"})
    try:
        status, _, _ = fetch(server.port, "GET", "/")
        assert status == 200
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert "pub/sub through Redis at redis://127.0.0.1:6390/2" in log
    assert "pw@" not in log  # the password stays out of the log


def test_gunicorn_conf_with_redis_joins_chat_rooms_across_servers():
    """Two gunicorn instances (think: two hosts) on one Redis share every room."""
    from .redis_support import RedisServer

    redis = RedisServer()
    servers = []
    try:
        for _ in range(2):
            servers.append(start_gunicorn("examples.chat:application",
                                          {"WSM_REDIS_URL": redis.url, "WEB_CONCURRENCY": "1"}))
        with contextlib.ExitStack() as stack:
            members = [stack.enter_context(ws_connect(f"{server.url}/ws/chat/deploy?name=m{i}", open_timeout=5))
                       for i, server in enumerate(servers)]
            for i, member in enumerate(members):  # each sees its own join: subscribed
                while json.loads(member.recv(timeout=5))["name"] != f"m{i}":
                    pass
            sent = []
            for i in range(6):  # announced through either server, heard on both
                server = servers[i % 2]
                status, _, body = fetch(server.port, "POST", "/announce?room=deploy", f"note {i}".encode())
                assert status == 200
                sent.append(f"note {i}")
            assert len({json.loads(fetch(s.port, "POST", "/announce?room=x", b"pid")[2])["pid"] for s in servers}) == 2
            for member in members:
                got = []
                while len(got) < len(sent):
                    message = json.loads(member.recv(timeout=5))
                    if message["type"] == "announce":
                        got.append(message["text"])
                assert got == sent
    finally:
        for server in servers:
            server.stop()
        redis.close()
    for server in servers:
        assert f"pub/sub through Redis at redis://127.0.0.1:{redis.port}/0" in server.log_path.read_text()


def nginx_config(folder: Path, listen_port: int, app_port: int) -> Path:
    """examples/nginx.conf as written, with its two addresses moved to free loopback ports."""
    site = (EXAMPLES / "nginx.conf").read_text()
    assert "server 127.0.0.1:8000;" in site and "listen 80;" in site
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
    (folder / "site.conf").write_text(site)
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(exist_ok=True)
    main = folder / "nginx.conf"
    main.write_text(f"""
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {folder}/site.conf;
}}
""")
    return main


def test_nginx_conf_proxies_http_and_websocket(tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    app = start_gunicorn("examples.rpc:application", {"WEB_CONCURRENCY": "1"})
    port = free_port()
    config = nginx_config(tmp_path, port, app.port)
    checked = subprocess.run([nginx, "-t", "-c", str(config)], capture_output=True, text=True, timeout=20)
    assert checked.returncode == 0, checked.stderr
    proxy = subprocess.Popen([nginx, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc=proxy)
        status, headers, body = fetch(port, "GET", "/")
        assert status == 200 and b"/ws/notes" in body
        # A browser on the proxy's address: its Origin must match the Host nginx passes on.
        origin = f"http://127.0.0.1:{port}"
        with ws_connect(f"ws://127.0.0.1:{port}/ws/notes", origin=origin, open_timeout=5) as ws:
            ws.send(json.dumps({"type": "add", "id": 1, "text": "through nginx"}))
            assert json.loads(ws.recv(timeout=5))["type"] == "note_added"
            assert json.loads(ws.recv(timeout=5))["result"]["text"] == "through nginx"
            big = "x" * 200_000
            ws.send(json.dumps({"type": "list", "id": 2, "pad": big}))
            assert json.loads(ws.recv(timeout=5))["id"] == 2
        access = (tmp_path / "access.log").read_text()
        assert '"GET /ws/notes HTTP/1.1" 101' in access
    finally:
        proxy.send_signal(signal.SIGQUIT)
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(5)
        app.stop()
