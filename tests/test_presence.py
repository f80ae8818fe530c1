"""Presence: ``PubSub.join/leave/presence`` on both backends, events, Redis expiry, outages
and forks; ``PubSubWS(presence=True)`` end to end under gevent.pywsgi.

The cluster acceptance (gunicorn -w 2) is in ``test_presence_cluster.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import subprocess
import textwrap
import time
import urllib.parse
import uuid

import gevent
import pytest
from websockets.exceptions import ConnectionClosed as WSConnectionClosed
from websockets.sync.client import connect

from wsmiddleware import PubSubError
from wsmiddleware.pubsub import MemoryPubSub, PubSub, RedisPubSub, presence_channel

from .support import PYTHON, ROOT, Inbox, start_server
from .test_pubsub_redis import wait_for
from .test_pubsub_ws import get_json

APP = "tests.presence_apps:application"


def unique(prefix: str = "ch") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    if request.param == "memory":
        instance: PubSub = MemoryPubSub()
    else:
        instance = RedisPubSub(request.getfixturevalue("redis_server").url, reconnect_delay=0.05, presence_ttl=2)
    yield instance
    instance.close()


# -- the API, on both backends ---------------------------------------------------------


def test_join_leave_and_presence(backend):
    channel, other = unique(), unique()
    assert backend.presence(channel) == {}
    backend.join(channel, "ann", {"name": "Ann", "tags": ("a", "b")})
    backend.join(channel, "bob")
    backend.join(other, "cid", 7)
    # Info comes back after a JSON round trip (a tuple is a list), None included.
    assert backend.presence(channel) == {"ann": {"name": "Ann", "tags": ["a", "b"]}, "bob": None}
    backend.join(channel, "bob", "new info")  # joining again replaces the info
    assert backend.presence(channel)["bob"] == "new info"
    backend.leave(channel, "ann")
    backend.leave(channel, "nobody")  # absent: a no-op
    backend.leave(unique(), "bob")
    assert backend.presence(channel) == {"bob": "new info"}
    assert backend.presence(other) == {"cid": 7}
    backend.leave(channel, "bob")
    assert backend.presence(channel) == {}


@pytest.mark.parametrize("info", [object(), {"x": {1, 2}}, math.nan, [math.inf]])
def test_info_must_be_json_and_is_checked_at_join(backend, info):
    channel = unique()
    with pytest.raises(TypeError, match="JSON"):
        backend.join(channel, "m", info)
    assert backend.presence(channel) == {}


@pytest.mark.parametrize("channel, member", [("", "m"), (b"c", "m"), ("c", ""), ("c", 5), ("c", None)])
def test_channel_and_member_are_non_empty_str(backend, channel, member):
    with pytest.raises(TypeError):
        backend.join(channel, member)
    with pytest.raises(TypeError):
        backend.leave(channel, member)


def test_join_and_leave_are_announced_on_the_side_channel_when_asked(backend):
    channel = unique()
    assert presence_channel(channel) == "wsm.presence:" + channel
    inbox = Inbox()
    backend.subscribe(presence_channel(channel), inbox)
    backend.join(channel, "ann", {"name": "Ann"}, announce=True)
    backend.join(channel, "quiet", 1)  # not announced
    backend.leave(channel, "quiet")
    backend.leave(channel, "nobody", announce=True)  # absent: nothing to announce
    backend.leave(channel, "ann", announce=True)
    assert wait_for(lambda: len(inbox.got) >= 2, 5)
    gevent.sleep(0.1)
    assert [c for c, _ in inbox.got] == [presence_channel(channel)] * 2
    events = [json.loads(m) for m in inbox.messages()]
    assert all(isinstance(m, str) for m in inbox.messages())
    assert events == [
        {"type": "join", "channel": channel, "member": "ann", "info": {"name": "Ann"}},
        {"type": "leave", "channel": channel, "member": "ann", "info": {"name": "Ann"}},
    ]


def test_a_closed_backend_refuses_joins_and_ignores_leaves(backend):
    channel = unique()
    backend.join(channel, "m")
    backend.close()
    with pytest.raises(PubSubError, match="closed"):
        backend.join(channel, "n")
    backend.leave(channel, "m")


def test_a_backend_without_presence_says_so():
    class Bare(MemoryPubSub):
        pass

    # The generic methods of the base class name the backend that lacks presence.
    with pytest.raises(NotImplementedError, match="Bare"):
        PubSub.presence(Bare(), "c")
    with pytest.raises(NotImplementedError, match="Bare"):
        PubSub._join(Bare(), "c", "m", "null")


# -- Redis: across processes, expiry, outages, forks -------------------------------------


def test_redis_presence_spans_instances_and_close_removes_them_at_once(redis_server):
    ttl = 1.5
    first = RedisPubSub(redis_server.url, presence_ttl=ttl)
    second = RedisPubSub(redis_server.url, presence_ttl=ttl)
    channel = unique()
    try:
        first.join(channel, "a1", {"n": 1})
        first.join(channel, "a2", {"n": 2})
        second.join(channel, "b1", {"n": 3})
        expected = {"a1": {"n": 1}, "a2": {"n": 2}, "b1": {"n": 3}}
        assert first.presence(channel) == second.presence(channel) == expected
        # One hash per process (not per member), one set of processes, both with an expiry.
        keys = sorted(redis_server.cli("KEYS", f"wsm:{{{channel}}}:presence*").split())
        assert len(keys) == 3 and keys[0] == f"wsm:{{{channel}}}:presence"
        assert all(0 < int(redis_server.cli("PTTL", key)) <= ttl * 1000 for key in keys)
        # Refreshed by each process: still there after several TTLs.
        gevent.sleep(3 * ttl)
        assert second.presence(channel) == expected
        first.close()
        assert second.presence(channel) == {"b1": {"n": 3}}
        second.leave(channel, "b1")
        assert redis_server.cli("KEYS", f"wsm:{{{channel}}}:presence*") == ""
    finally:
        first.close()
        second.close()


def test_presence_ttl_is_validated(redis_server):
    for bad in (0, -1, "5", None, True):
        with pytest.raises(ValueError, match="presence_ttl"):
            RedisPubSub(redis_server.url, presence_ttl=bad)


DYING_SCRIPT = textwrap.dedent("""
    import sys, gevent
    from wsmiddleware.pubsub import RedisPubSub
    pubsub = RedisPubSub(sys.argv[1], presence_ttl=float(sys.argv[3]))
    pubsub.join(sys.argv[2], "doomed-1", {"pid": 1})
    pubsub.join(sys.argv[2], "doomed-2")
    print("joined", flush=True)
    gevent.sleep(60)
""")


def test_the_members_of_a_killed_process_expire_within_the_ttl(redis_server):
    ttl = 1.5
    channel = unique()
    watcher = RedisPubSub(redis_server.url, presence_ttl=ttl)
    watcher.join(channel, "survivor")
    proc = subprocess.Popen([PYTHON, "-c", DYING_SCRIPT, redis_server.url, channel, str(ttl)], cwd=str(ROOT),
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"joined"
        gevent.sleep(2 * ttl)  # alive: its refresher keeps its members
        assert set(watcher.presence(channel)) == {"survivor", "doomed-1", "doomed-2"}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        assert wait_for(lambda: set(watcher.presence(channel)) == {"survivor"}, ttl + 1.0, step=0.05)
        assert time.monotonic() - killed <= ttl + 0.2
        # The dead process's entry is pruned from the set of processes.
        assert redis_server.cli("ZCARD", f"wsm:{{{channel}}}:presence") == "1"
    finally:
        proc.kill()
        proc.wait(10)
        watcher.close()


def test_a_redis_outage_never_fails_joins_and_presence_is_whole_again_after_it(fresh_redis, caplog):
    caplog.set_level(logging.INFO, logger="wsmiddleware.pubsub.redis")
    ttl = 1.5
    worker = RedisPubSub(fresh_redis.url, presence_ttl=ttl, reconnect_delay=0.05, max_reconnect_delay=0.3)
    reader = RedisPubSub(fresh_redis.url, presence_ttl=ttl, reconnect_delay=0.05, max_reconnect_delay=0.3)
    channel = unique()
    try:
        for name in ("m1", "m2", "m3"):
            worker.join(channel, name, {"name": name})
        fresh_redis.kill()
        with gevent.Timeout(5):  # a bound: no join or leave waits for Redis
            worker.join(channel, "m4", {"name": "m4"}, announce=True)
            worker.leave(channel, "m1", announce=True)
            worker.join(unique(), "elsewhere")
            for _ in range(20):
                worker.join(channel, "flap")
                worker.leave(channel, "flap")
        with pytest.raises(PubSubError, match="unavailable"):
            reader.presence(channel)
        expected = {name: {"name": name} for name in ("m2", "m3", "m4")}
        fresh_redis.start()  # empty: it kept nothing
        back = time.monotonic()
        assert wait_for(lambda: _presence_or_none(reader, channel) == expected, ttl / 3 + 2.0, step=0.05)
        assert time.monotonic() - back <= ttl / 3 + 1.0
        fresh_redis.cli("FLUSHALL")
        flushed = time.monotonic()
        assert wait_for(lambda: reader.presence(channel) == expected, ttl / 3 + 2.0, step=0.05)
        assert time.monotonic() - flushed <= ttl / 3 + 0.5
    finally:
        worker.close()
        reader.close()
    outage = [r for r in caplog.records if "presence not written" in r.getMessage()]
    assert len(outage) == 1  # logged once per outage
    assert any("presence written again" in r.getMessage() for r in caplog.records)


def _presence_or_none(pubsub, channel):
    try:
        return pubsub.presence(channel)
    except PubSubError:
        return None


FORK_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import gevent
    from wsmiddleware.pubsub import RedisPubSub

    channel, ttl = sys.argv[2], float(sys.argv[3])
    pubsub = RedisPubSub(sys.argv[1], presence_ttl=ttl)
    pubsub.join(channel, "parent", "p")
    read_end, write_end = os.pipe()
    pid = gevent.fork()
    if pid == 0:
        pubsub.leave(channel, "parent")  # not the child's member: a no-op
        pubsub.join(channel, "child", "c")
        seen = pubsub.presence(channel)
        os.write(write_end, json.dumps(seen).encode())
        os._exit(0)  # dies without leaving: its member expires
    child = json.loads(os.read(read_end, 65536))
    os.waitpid(pid, 0)
    gevent.sleep(ttl + 0.5)
    print(json.dumps({"child": child, "parent": pubsub.presence(channel)}))
""")


def test_a_forked_child_starts_without_the_parents_members(redis_server):
    result = subprocess.run([PYTHON, "-c", FORK_SCRIPT, redis_server.url, unique(), "1"], cwd=str(ROOT),
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert report["child"] == {"parent": "p", "child": "c"}
    # The parent's member survived the child's leave and exit; the child's expired.
    assert report["parent"] == {"parent": "p"}


# -- PubSubWS under gevent.pywsgi (MemoryPubSub) -------------------------------------------


@pytest.fixture(scope="module")
def pywsgi_presence():
    server = start_server("pywsgi", app=APP)
    yield server
    server.stop()


def members(server, channel: str) -> dict:
    return get_json(server, "/presence?" + urllib.parse.urlencode({"channel": channel}))[1]["members"]


def wait_members(server, channel: str, predicate, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    found = members(server, channel)
    while not predicate(found) and time.monotonic() < deadline:
        time.sleep(0.02)
        found = members(server, channel)
    return found


def test_each_connection_is_a_member_while_it_is_open(pywsgi_presence):
    server, room = pywsgi_presence, uuid.uuid4().hex[:8]
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(connect(f"{server.url}/ws/members/{room}?hello=1&name=n{i}", open_timeout=10))
                   for i in range(3)]
        ids = [json.loads(ws.recv(timeout=10))["member"] for ws in clients]
        found = members(server, f"room:{room}")
        assert found == {ids[i]: {"name": f"n{i}"} for i in range(3)}
        # Messages still flow on the channel.
        clients[0].send("hello all")
        assert [ws.recv(timeout=10) for ws in clients] == ["hello all"] * 3
        clients[1].close()
        assert set(wait_members(server, f"room:{room}", lambda m: len(m) == 2, 1.0)) == {ids[0], ids[2]}
    assert wait_members(server, f"room:{room}", lambda m: not m, 2.0) == {}


def test_events_reach_watchers_own_join_first(pywsgi_presence):
    server, room = pywsgi_presence, uuid.uuid4().hex[:8]
    channel = f"room:{room}"
    with connect(f"{server.url}/ws/watch/{room}?name=ann", open_timeout=10) as ann:
        own = json.loads(ann.recv(timeout=10))
        assert own["type"] == "join" and own["channel"] == channel and own["info"] == {"name": "ann"}
        with connect(f"{server.url}/ws/watch/{room}?name=bob", open_timeout=10) as bob:
            bob_join = json.loads(bob.recv(timeout=10))
            assert json.loads(ann.recv(timeout=10)) == bob_join
            assert bob_join["type"] == "join" and bob_join["info"] == {"name": "bob"}
            assert set(members(server, channel)) == {own["member"], bob_join["member"]}
        leave = json.loads(ann.recv(timeout=10))
        assert leave == {"type": "leave", "channel": channel, "member": bob_join["member"], "info": {"name": "bob"}}
        # An HTTP view's join and leave are announced too, and an observer (no presence) sees them.
        with connect(f"{server.url}/ws/observe/{room}", open_timeout=10) as observer:
            assert get_json(server, f"/join?channel={channel}&member=view&name=v")[0] == 200
            assert get_json(server, f"/leave?channel={channel}&member=view")[0] == 200
            for ws in (ann, observer):
                assert [json.loads(ws.recv(timeout=10))["type"] for _ in range(2)] == ["join", "leave"]
            assert set(members(server, channel)) == {own["member"]}  # the observer is no member


def test_presence_info_argument_and_member_id_from_the_handshake(pywsgi_presence):
    server, room = pywsgi_presence, uuid.uuid4().hex[:8]
    with connect(f"{server.url}/ws/custom/{room}?hello=1&name=zed&own_id=1", open_timeout=10) as ws:
        member = json.loads(ws.recv(timeout=10))["member"]
        assert member.startswith("own-")
        assert members(server, f"room:{room}") == {member: {"custom": "zed", "path": f"/ws/custom/{room}"}}


def test_info_that_is_not_json_closes_with_1011_and_leaves_no_member(pywsgi_presence):
    server, room = pywsgi_presence, uuid.uuid4().hex[:8]
    with connect(f"{server.url}/ws/custom/{room}?bad=1", open_timeout=10) as ws:
        with pytest.raises(WSConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1011
    assert members(server, f"room:{room}") == {}
