"""examples/chat.py as documented: the script with in-memory pub/sub, gunicorn workers with Redis."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .redis_support import RedisServer
from .support import BIN, PYTHON, ROOT, ServerProcess, free_port


def fetch(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def events_until(ws, predicate, limit: int = 50) -> list[dict]:
    """Chat events up to and including the first one matching ``predicate``."""
    seen = []
    for _ in range(limit):
        event = json.loads(ws.recv(timeout=10))
        seen.append(event)
        if predicate(event):
            return seen
    raise AssertionError(f"no matching event in {seen}")


def worker_pids(server: ServerProcess) -> set[int]:
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", server.log())}


def member(stack: contextlib.ExitStack, server: ServerProcess, room: str, name: str):
    ws = stack.enter_context(connect(f"{server.url}/ws/chat/{room}?name={name}", open_timeout=10))
    events_until(ws, lambda e: e["type"] == "join" and e["name"] == name)  # subscribed: it heard itself join
    return ws


@pytest.fixture(scope="module")
def script():
    port = free_port()
    server = ServerProcess([PYTHON, str(ROOT / "examples" / "chat.py"), "--host", "127.0.0.1", "--port", str(port)],
                           port, env={"WSM_REDIS_URL": ""}, name="example-chat")
    yield server
    server.stop()


def test_page_is_served_with_its_script(script):
    status, body = fetch(script.port, "GET", "/")
    assert status == 200
    assert b"new WebSocket" in body and b"/ws/chat/" in body
    assert fetch(script.port, "GET", "/nope")[0] == 404


def test_rooms_keep_their_conversations_apart(script):
    with contextlib.ExitStack() as stack:
        ann = member(stack, script, "lobby", "ann")
        bob = member(stack, script, "lobby", "bob")
        events_until(ann, lambda e: e["type"] == "join" and e["name"] == "bob")
        cook = member(stack, script, "kitchen", "cook")
        ann.send("hello lobby")
        for ws in (ann, bob):
            [said] = [e for e in events_until(ws, lambda e: e["type"] == "message") if e["type"] == "message"]
            assert (said["name"], said["text"]) == ("ann", "hello lobby")
        cook.send("soup's on")
        said = events_until(cook, lambda e: e["type"] == "message")[-1]
        assert (said["name"], said["text"]) == ("cook", "soup's on")
        status, body = fetch(script.port, "POST", "/announce?room=lobby", b"doors close at ten")
        assert status == 200 and json.loads(body)["ok"]
        for ws in (ann, bob):
            assert events_until(ws, lambda e: e["type"] == "announce")[-1]["text"] == "doors close at ten"
        # The kitchen heard nothing from the lobby: its next event is its own.
        cook.send("second course")
        assert events_until(cook, lambda e: True)[0]["text"] == "second course"
        bob.close()
        assert events_until(ann, lambda e: e["type"] == "leave")[-1]["name"] == "bob"


def test_bad_room_names_are_refused_with_400(script):
    with pytest.raises(InvalidStatus) as info:
        connect(f"{script.url}/ws/chat/no%20spaces?name=x", open_timeout=10)
    assert info.value.response.status_code == 400
    assert fetch(script.port, "POST", "/announce?room=a/b", b"x")[0] in (400, 404)


def test_gunicorn_workers_share_rooms_through_redis():
    """The documented command: WSM_REDIS_URL=... gunicorn -k gevent -w N examples.chat:application."""
    redis = RedisServer()
    port = free_port()
    server = ServerProcess(
        [str(BIN / "gunicorn"), "-k", "gevent", "-w", "2", "-b", f"127.0.0.1:{port}", "examples.chat:application"],
        port, env={"WSM_REDIS_URL": redis.url}, name="example-chat-gunicorn",
    )
    try:
        with contextlib.ExitStack() as stack:
            # Each worker has one subscriber connection, which Redis lists under the
            # worker's pid once a member on that worker is subscribed.
            members = [member(stack, server, "everyone", "m0")]
            for i in range(1, 10):
                busy = [int(c["name"].rsplit("-", 1)[1]) for c in redis.pubsub_clients()]
                if len(busy) == 2:
                    break
                # Pause the worker that has everyone so that the other one accepts the next member.
                os.kill(busy[0], signal.SIGSTOP)
                try:
                    pending = threading.Thread(target=lambda i=i: members.append(member(stack, server, "everyone", f"m{i}")))
                    pending.start()
                    time.sleep(0.3)
                finally:
                    os.kill(busy[0], signal.SIGCONT)
                pending.join(15)
            subscribers = redis.pubsub_clients()
            assert len(subscribers) == 2
            assert {c["sub"] for c in subscribers} == {"1"}
            assert {int(c["name"].rsplit("-", 1)[1]) for c in subscribers} == worker_pids(server)
            members[0].send("across workers")
            assert redis.cli("PUBLISH", "chat:everyone", json.dumps({"type": "announce", "text": "from redis-cli"})) == "2"
            for ws in members:
                said = [e for e in events_until(ws, lambda e: e["type"] == "announce")
                        if e["type"] in ("message", "announce")]
                assert [(e["type"], e["text"]) for e in said] == [("message", "across workers"),
                                                                  ("announce", "from redis-cli")]
    finally:
        server.stop()
        redis.close()
    assert "Traceback" not in server.log_path.read_text()
