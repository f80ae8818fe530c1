"""Regression tests for the engine defects of the issue "engine" (numbers from the issue).

Each test runs real servers (``tests.defect_apps`` under gevent.pywsgi and ``gunicorn -k
gevent``) and talks to them with independent clients: the ``websockets`` sync client, and
raw sockets for what a well-behaved client never does (not reading, half-closing,
resetting, flooding). The server side is observed through its HTTP endpoints
(``/events``: what the callbacks saw; ``/stats``: fds, greenlets, open connections) and
its log, in which gevent's hub must never print an error (``hub_errors``).

Only the public API is used: the same tests run against the old engine (where each
fails, see the docstrings) and the rewritten one.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.sync.client import connect as ws_connect

from .conformance.rawclient import CLOSE, PING, TEXT, RawClient, encode_frame
from .robust_apps import wait_until
from .support import http_request, hub_errors, read_http_response, start_server, upgrade_request

APP = "tests.defect_apps:application"
KINDS = ["pywsgi", "gunicorn"]
KiB, MiB = 2**10, 2**20
#: Greenlets a server may hold above its idle baseline once a connection is gone
#: (the keepalive ticker outlives the last connection by a tick; a pool's stand-in).
GREENLET_SLACK = 2


# -- servers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers():
    """One server per kind for the whole module, started on first use."""
    started: dict = {}

    def get(kind: str):
        if kind not in started:
            started[kind] = start_server(kind, APP)
        return started[kind]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture(params=KINDS)
def served(request, servers):
    """A shared server of each kind; ``served.mark`` is where this test's part of its log starts."""
    server = servers(request.param)
    server.mark = len(server.log())
    return server


@pytest.fixture
def pywsgi(servers):
    server = servers("pywsgi")
    server.mark = len(server.log())
    return server


def this_tests_log(server) -> str:
    return server.log()[getattr(server, "mark", 0):]


def assert_no_hub_errors(server) -> None:
    errors = hub_errors(this_tests_log(server))
    assert errors == [], "gevent's hub printed errors:\n" + "\n".join(errors)


# -- observing the server ------------------------------------------------------------


def unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def get_json(server, path: str, timeout: float = 30.0):
    with urllib.request.urlopen(f"{server.http}{path}", timeout=timeout) as response:
        return json.loads(response.read())


def events(server, key: str) -> list:
    return get_json(server, f"/events?id={key}")


def stats(server) -> dict:
    return get_json(server, "/stats")


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """Poll ``predicate`` until it returns a true value (returned) or ``timeout`` passes (the last value)."""
    return wait_until(predicate, timeout, interval)


def closes(found: list) -> list:
    return [event for event in found if event[0] == "close"]


def wait_closed(server, key: str, timeout: float = 10.0, grace: float = 0.5) -> list:
    """The events of ``key`` once on_close has been recorded (or ``timeout`` passed), and
    ``grace`` seconds later, so that a second on_close would show too."""
    found = wait_for(lambda: closes(events(server, key)), timeout)
    if found and grace:
        time.sleep(grace)
    return events(server, key)


def assert_closed_once(server, key: str, codes: set, timeout: float = 10.0, grace: float = 0.5) -> list:
    found = wait_closed(server, key, timeout, grace)
    closed = closes(found)
    assert len(closed) == 1, f"on_close must run exactly once for {key}, events: {found}"
    assert closed[0][1] in codes, f"close code {closed[0][1]} not in {sorted(codes)}: {found}"
    return found


def settled(server, timeout: float = 15.0, idle_within: float = 5.0) -> dict:
    """The baseline: two readings in a row agree on fds and connections, and no connection
    is open. If an earlier test left connections open (a leak it failed for), after
    ``idle_within`` seconds the baseline is what is there, so that this test still tests."""
    readings: list = []
    started = time.monotonic()

    def check():
        now = stats(server)
        readings[:] = (readings + [now])[-2:]
        stable = len(readings) == 2 and all(
            readings[0][name] == readings[1][name] for name in ("fds", "connections"))
        idle = now["connections"] == 0 or time.monotonic() - started > idle_within
        return now if stable and idle else None

    found = wait_for(check, timeout, interval=0.2)
    assert found, f"the server did not settle: {readings}"
    return found


def assert_back_to(server, baseline: dict, timeout: float = 10.0) -> None:
    """fds and connections back at the baseline, greenlets within a small slack."""

    def back():
        now = stats(server)
        ok = (now["fds"] <= baseline["fds"] and now["connections"] <= baseline["connections"]
              and now["greenlets"] <= baseline["greenlets"] + GREENLET_SLACK)
        return now if ok else None

    assert wait_for(back, timeout, interval=0.2), f"not back to {baseline}: {stats(server)}"


# -- raw clients -----------------------------------------------------------------------


class Client(RawClient):
    """A raw WebSocket client that reads only when told to; optionally a tiny receive buffer."""

    def __init__(self, port: int, path: str, *, rcvbuf: int | None = None, timeout: float = 10.0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.sock.sendall(upgrade_request(path, port))
        self.status, self.headers, self.buffer = read_http_response(self.sock)
        assert self.status == 101, f"handshake for {path} answered {self.status}"
        self.eof = False
        self.write_failed = False
        self.inflater = None


def drain(sock: socket.socket, limit: int = 256 * MiB, timeout: float = 30.0) -> tuple[str, int]:
    """Read until the server ends the TCP connection: ("eof" | "reset" | "timeout", bytes read)."""
    deadline = time.monotonic() + timeout
    total = 0
    while total < limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", total
        sock.settimeout(min(remaining, 5.0))
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return "reset", total
        if not chunk:
            return "eof", total
        total += len(chunk)
    return "limit", total


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def fin_wait_1(port: int) -> list[str]:
    """The server port's sockets in FIN-WAIT-1: a FIN stuck behind bytes the peer never takes."""
    out = subprocess.run(["ss", "-tanH", "state", "fin-wait-1", "sport", "=", f":{port}"],
                         capture_output=True, text=True, timeout=10)
    return [line for line in out.stdout.splitlines() if line.strip()]


# -- 1: on_close skipped when the peer half-closes while the writer drains ------------------


def test_on_close_runs_once_when_the_peer_half_closes_while_the_writer_drains(served):
    """Old engine: _finish joins the writer, which sets _writer = None as it ends, then
    calls _writer.kill(): AttributeError, on_close never runs, the registry keeps it."""
    baseline = settled(served)
    key = unique("backlog")
    client = Client(served.port, f"/ws/backlog?id={key}")
    try:
        # on_open has queued its 8 MiB (64 KiB messages, a 64 MiB send_queue_limit).
        assert wait_for(lambda: [e for e in events(served, key) if e[0] == "wrote"], 20), events(served, key)
        client.sock.shutdown(socket.SHUT_WR)  # FIN: the peer is done sending, still reads
        time.sleep(1.0)
        outcome, _ = drain(client.sock, timeout=60)
        assert outcome in ("eof", "reset"), f"the server never ended the TCP connection ({outcome})"
    finally:
        client.close()
    found = assert_closed_once(served, key, {1000, 1001, 1006, 1011})
    assert found[0] == ["open"]
    assert_back_to(served, baseline)
    assert_no_hub_errors(served)


# -- 2: aborted parked connections: no hub tracebacks, on_close for each --------------------


def test_keepalive_timeouts_close_parked_connections_without_hub_errors(served):
    """20 clients that never read nor answer pings (ping_interval=ping_timeout=0.3 s).
    Old engine: the abort of a parked socket makes the hub print "AttributeError:
    'WebSocket' object has no attribute 'throw'", and on_close never runs."""
    baseline = settled(served)
    key = unique("keepalive")
    keys = [f"{key}-{i}" for i in range(20)]
    clients = [Client(served.port, f"/ws/keepalive?id={k}") for k in keys]
    try:
        assert wait_for(lambda: all(closes(events(served, k)) for k in keys), 15), \
            {k: events(served, k) for k in keys}
        for i, k in enumerate(keys):  # they closed together: one grace period covers them all
            assert_closed_once(served, k, {1011, 1006}, timeout=1, grace=0.5 if i == 0 else 0)
        assert_back_to(served, baseline)
    finally:
        for client in clients:
            client.close()
    assert_no_hub_errors(served)


def test_close_timeouts_of_parked_connections_without_hub_errors(served):
    """The server closes parked connections (from another greenlet) and the clients
    never answer: close_timeout=0.5 s ends them. Old engine: hub traceback, no on_close."""
    baseline = settled(served)
    key = unique("closetimeout")
    keys = [f"{key}-{i}" for i in range(5)]
    clients = [Client(served.port, f"/ws/closer?id={k}") for k in keys]
    try:
        time.sleep(2.0)  # idle: the connections park
        for k in keys:
            assert get_json(served, f"/close?id={k}&code=4000") == {"ok": True}
        assert wait_for(lambda: all(closes(events(served, k)) for k in keys), 15), \
            {k: events(served, k) for k in keys}
        for i, k in enumerate(keys):
            assert_closed_once(served, k, {4000, 1006}, timeout=1, grace=0.5 if i == 0 else 0)
        for client in clients:  # a close frame, then the server drops TCP
            frame = client.frame(timeout=5)
            assert frame.opcode == CLOSE and frame.close_code == 4000, frame
            assert drain(client.sock, timeout=10)[0] in ("eof", "reset")
        assert_back_to(served, baseline)
    finally:
        for client in clients:
            client.close()
    assert_no_hub_errors(served)


@pytest.mark.parametrize("how", ["write", "broadcast"])
def test_slow_consumer_close_of_a_parked_connection(served, how):
    """A parked client that does not read gets 16 MiB written to it from an HTTP request
    (send_queue_limit=64 KiB): the policy closes it. Old engine: the abort of the parked
    socket prints a hub traceback and on_close never runs."""
    baseline = settled(served)
    key = unique(f"slowparked-{how}")
    client = Client(served.port, f"/ws/slow?id={key}", rcvbuf=4096)
    try:
        time.sleep(2.0)  # idle: the connection parks
        result = get_json(served, f"/write?id={key}&count=256&size=65536&how={how}", timeout=60)
        assert result["closed"] and result["written"] < 256, result
        assert_closed_once(served, key, {1008, 1006})
        assert_back_to(served, baseline)
    finally:
        client.close()
    assert_no_hub_errors(served)


# -- 3: gunicorn behind other WSGI middleware -------------------------------------------------


@pytest.mark.parametrize("app", ["generator_wrapped", "debugged"])
def test_gunicorn_behind_other_wsgi_middleware(app):
    """A generator-based middleware, and werkzeug's DebuggedApplication, around the app
    under ``gunicorn -k gevent``; the connection idles (parks) in between. Old engine:
    the parked connection's WSGI call raises StopIteration through them: "generator
    raised StopIteration", "Error handling request", a 500 page written to the socket."""
    pytest.importorskip("werkzeug")
    server = start_server("gunicorn", f"tests.defect_apps:{app}")
    try:
        key = unique(app)
        with ws_connect(f"{server.url}/ws/echo?id={key}", open_timeout=10) as ws:
            ws.send("before idling")
            assert ws.recv(timeout=10) == "before idling"
            time.sleep(2.0)  # idle connections park
            for i in range(5):
                ws.send(f"after idling {i}")
                assert ws.recv(timeout=10) == f"after idling {i}"
        assert_closed_once(server, key, {1000})
        wrapper = wait_for(lambda: events(server, f"{key}-wrapper"), 10)
        assert wrapper == [["ended"]], f"the wrapping middleware saw: {wrapper}"
        # A second connection after the first: the worker is still fine.
        with ws_connect(f"{server.url}/ws/echo?id={key}-2", open_timeout=10) as ws:
            ws.send("again")
            assert ws.recv(timeout=10) == "again"
        assert_closed_once(server, f"{key}-2", {1000})
        log = server.log()
        for bad in ("Error handling request", "generator raised StopIteration", "Bad file descriptor",
                    "Debugging middleware caught exception", "Traceback (most recent call last)"):
            assert bad not in log, f"{bad!r} in the server log:\n{log}"
        assert hub_errors(log) == []
    finally:
        server.stop()


# -- 6: broadcast() to a client-side connection ---------------------------------------------------


def test_broadcast_to_a_client_connection_masks_its_frames_or_refuses(pywsgi):
    """Old engine: broadcast() queues the unmasked server frame on a client connection;
    the server fails the connection with 1002."""
    import gevent

    import wsmiddleware
    from wsmiddleware import ConnectionClosed
    from wsmiddleware.client import connect

    key = unique("client-broadcast")
    conn = connect(f"{pywsgi.url}/ws/echo?id={key}", compression=None)
    try:
        try:
            wsmiddleware.broadcast([conn.websocket], "hi")
        except TypeError:
            pass  # refusing client connections is one correct answer
        else:
            try:
                assert conn.receive(timeout=10) == "hi"
            except ConnectionClosed as exc:
                pytest.fail(f"the server closed the connection after the broadcast: {exc.code} {exc.reason}")
        conn.write("still open")
        assert conn.receive(timeout=10) == "still open"
    finally:
        conn.close()
        conn.wait_closed(10)
    assert conn.close_code != 1002

    def closed_events():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = events(pywsgi, key)
            if closes(found):
                return found
            gevent.sleep(0.1)
        return events(pywsgi, key)

    assert closes(closed_events()) == [["close", 1000, ""]]
    assert_no_hub_errors(pywsgi)


# -- 7: the process's own client connections are not server connections ---------------------------


def start_with_own_clients(kind: str, app: str, upstream, key: str):
    """Serve ``app``; at import the process opens two client connections of its own to
    ``upstream`` (ids ``KEY-c0``, ``KEY-c1``). Returns the server once both are open."""
    internal = [f"{key}-c{i}" for i in range(2)]
    server = start_server(kind, f"tests.defect_apps:{app}",
                          env={"WSM_DEFECT_UPSTREAM": f"{upstream.url}/ws/echo?id={key}"})
    try:
        assert wait_for(lambda: all(events(upstream, k)[:1] == [["open"]] for k in internal), 20), \
            (events(server, "internal"), [events(upstream, k) for k in internal])
        assert stats(server)["clients"] == 2
    except BaseException:
        server.stop()
        raise
    return server, internal


@pytest.mark.parametrize("kind", KINDS)
def test_own_client_connections_do_not_count_against_max_connections(kind, servers):
    """max_connections=2 and two client connections of the process's own: two external
    clients still get 101. Old engine: the client connections are in the process-wide
    registry that max_connections counts: 503."""
    upstream = servers("pywsgi")  # the peer of the process's own clients
    upstream.mark = len(upstream.log())
    key = unique(f"own-clients-limit-{kind}")
    server, internal = start_with_own_clients(kind, "limited", upstream, key)
    try:
        with ws_connect(f"{server.url}/ws/echo?id={key}-x0", open_timeout=10) as a, \
                ws_connect(f"{server.url}/ws/echo?id={key}-x1", open_timeout=10) as b:
            for ws in (a, b):
                ws.send("hello")
                assert ws.recv(timeout=10) == "hello"
        assert_closed_once(server, f"{key}-x0", {1000})
        assert_closed_once(server, f"{key}-x1", {1000})
        assert stats(server)["clients"] == 2
        assert all(closes(events(upstream, k)) == [] for k in internal), "an own client connection closed"
        assert hub_errors(server.log()) == []
    finally:
        server.stop()
    assert_no_hub_errors(upstream)


@pytest.mark.parametrize("kind", KINDS)
def test_shutdown_closes_server_connections_but_not_the_process_own_clients(kind, servers):
    """SIGTERM while a server connection and two client connections of the process's own
    are open: the server connection is closed (gunicorn: with 1001); the client
    connections are not the shutdown's to close (they end with the process: 1006 at
    their peer). Old engine: gunicorn's shutdown hook closes them with 1001 "server
    shutting down" (tests.serve's pywsgi has no shutdown hook: passes there)."""
    upstream = servers("pywsgi")
    upstream.mark = len(upstream.log())
    key = unique(f"own-clients-stop-{kind}")
    server, internal = start_with_own_clients(kind, "application", upstream, key)
    try:
        with ws_connect(f"{server.url}/ws/echo?id={key}-x0", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            server.stop()  # SIGTERM; waits for the process to exit
            with pytest.raises(WsConnectionClosed) as info:
                ws.recv(timeout=10)
            if kind == "gunicorn":  # its graceful stop closes server connections with 1001
                assert info.value.rcvd is not None and info.value.rcvd.code == 1001, info.value
    finally:
        server.stop()
    for k in internal:
        found = wait_closed(upstream, k, timeout=15)
        closed = closes(found)
        assert len(closed) == 1, found
        assert closed[0][1] != 1001 and closed[0][2] != "server shutting down", \
            f"the server's shutdown closed its own client connection {k}: {found}"
    assert hub_errors(server.log_path.read_text(errors="replace")) == []  # stopped: its log is closed
    assert_no_hub_errors(upstream)


# -- 10: one connection must not stall the others --------------------------------------------------

FRAGMENTS = 200_000
PINGS = 100_000
#: Flooding clients at once. With one, the old engine's worst stall on a 2-core machine
#: was about 1 s (fragments) and 0.6 s (pings): each read's worth of frames (up to 1 MiB)
#: is parsed and dispatched without yielding, and B waits for every flooder's read of
#: that loop turn. With eight: 5.8-7 s (fragments) and 3.1-3.9 s (pings).
FLOODERS = 8
#: B's worst echo round trip allowed while they flood. A fair engine yields every few
#: milliseconds; this leaves room for a loaded CI machine.
MAX_ROUND_TRIP = 1.5


def fragment_flood() -> tuple[bytes, bytes]:
    """A text frame with fin=0, 200,000 empty masked continuation frames (fin=0), the last
    frame; and the echo that ends it."""
    key = os.urandom(4)
    data = b"\x01\x80" + key + (b"\x00\x80" + key) * FRAGMENTS + encode_frame(0x0, b"end", fin=True)
    return data, b"\x81\x03end"


def ping_flood() -> tuple[bytes, bytes]:
    """100,000 empty masked pings, then a text message "done"; and its echo."""
    key = os.urandom(4)
    return (b"\x89\x80" + key) * PINGS + encode_frame(TEXT, b"done"), b"\x81\x04done"


def flood_and_wait(port: int, data: bytes, marker: bytes, outcome: list) -> None:
    """One flooding client: sends ``data`` in one write while reading what comes back
    (pongs) until ``marker`` (the echo of its last message), a close frame or EOF."""
    client = Client(port, f"/ws/echo?id={unique('flooder')}", timeout=60)
    sender = threading.Thread(target=client.send_raw, args=(data,), daemon=True)
    sender.start()
    seen = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            client.sock.settimeout(5)
            try:
                chunk = client.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                outcome.append("reset")
                return
            if not chunk:
                outcome.append("eof")
                return
            # Pongs are b"\x8a\x00": a 0x88 byte can only start a close frame.
            seen = (seen + chunk)[-16:]
            if marker in seen or b"\x88" in chunk:
                outcome.append("echo" if marker in seen else "close")
                return
        outcome.append("timeout")
    except Exception as exc:  # reported, not raised: B's latency is what is tested
        outcome.append(repr(exc))
    finally:
        sender.join(30)
        client.close()


@pytest.mark.parametrize("flood", ["fragments", "pings"])
def test_flooding_connections_do_not_stall_the_others(pywsgi, flood):
    """Clients A each send, in one write, a text frame with fin=0 and 200,000 empty
    continuation frames (or 100,000 pings, whose pongs they read); meanwhile client B's
    echo round trips stay under MAX_ROUND_TRIP. Old engine: several seconds."""
    server = pywsgi
    make = fragment_flood if flood == "fragments" else ping_flood
    outcome: list = []
    with ws_connect(f"{server.url}/ws/echo?id={unique('b')}", open_timeout=10, compression=None) as b:
        for _ in range(3):
            b.send("warm up")
            assert b.recv(timeout=10) == "warm up"
        floods = [make() for _ in range(FLOODERS)]
        flooders = [threading.Thread(target=flood_and_wait, args=(server.port, data, marker, outcome), daemon=True)
                    for data, marker in floods]
        for thread in flooders:
            thread.start()
        worst, trips = 0.0, 0
        deadline = time.monotonic() + 150
        try:
            while any(thread.is_alive() for thread in flooders) and time.monotonic() < deadline:
                started = time.monotonic()
                b.send(f"trip {trips}")
                assert b.recv(timeout=60) == f"trip {trips}"
                worst = max(worst, time.monotonic() - started)
                trips += 1
        finally:
            for thread in flooders:
                thread.join(30)
        assert not any(thread.is_alive() for thread in flooders), f"the floods did not finish: {outcome}"
    print(f"B's worst round trip during the {flood} floods: {worst:.3f} s ({trips} trips; flooders: {outcome})")
    assert worst < MAX_ROUND_TRIP, \
        f"B's worst round trip during the {flood} floods: {worst:.2f} s ({trips} trips; flooders: {outcome})"
    assert_no_hub_errors(server)


# -- 11: pongs count against send_queue_limit ----------------------------------------------------


def test_pongs_owed_to_a_peer_that_never_reads_count_against_the_send_queue_limit(pywsgi):
    """60,000 pings of 125 bytes from a peer that never reads (send_queue_limit=256 KiB):
    the server must close or abort it within ~10 s. Old engine: pongs bypass the
    limit; the connection stays open while its queue grows by megabytes."""
    server = pywsgi
    baseline = settled(server)
    key = unique("pings")
    client = Client(server.port, f"/ws/pings?id={key}", timeout=30)
    payload = b"p" * 125
    data = b"".join(encode_frame(PING, payload) for _ in range(60_000))

    def send():
        try:
            client.sock.sendall(data)
        except OSError:  # the server may stop reading or drop the connection: fine
            pass

    sender = threading.Thread(target=send, daemon=True)
    started = time.monotonic()
    sender.start()
    try:
        found = wait_for(lambda: closes(events(server, key)), 15)
        elapsed = time.monotonic() - started
        assert found, f"the connection is still open {elapsed:.1f} s after the flood started: {events(server, key)}"
        assert_closed_once(server, key, {1008, 1006, 1011}, timeout=1)
        outcome, _ = drain(client.sock, timeout=30)
        assert outcome in ("eof", "reset"), outcome
        sender.join(30)
        assert_back_to(server, baseline)
    finally:
        client.close()
    assert_no_hub_errors(server)


# -- 12: slow consumers and the kernel's buffers -----------------------------------------------------


def test_a_reader_that_never_reads_is_closed_by_the_policy(served):
    """2 MiB written to a client that never reads (send_queue_limit=64 KiB): the bytes
    owed to it count, wherever they wait. Old engine: the kernel's socket buffers absorb
    them, and the connection is never closed."""
    baseline = settled(served)
    key = unique("neverreads")
    client = Client(served.port, f"/ws/big?id={key}")  # default socket buffers
    try:
        found = wait_for(lambda: closes(events(served, key)), 15)
        assert found, f"not closed by the slow-consumer policy: {events(served, key)}"
        assert_closed_once(served, key, {1008, 1006}, timeout=1)
        assert_back_to(served, baseline)
    finally:
        client.close()
    assert_no_hub_errors(served)


def test_a_closed_slow_consumer_leaves_no_socket_in_fin_wait_1(served):
    """After the policy closed a slow consumer, its socket is gone: the abort released
    the kernel's buffers (an RST), instead of a FIN queued behind megabytes the peer
    never takes. Old engine: FIN-WAIT-1 for minutes."""
    key = unique("finwait")
    client = Client(served.port, f"/ws/slow?id={key}", rcvbuf=4096)
    try:
        client.send(TEXT, b"flood 256 65536")  # 16 MiB from the reader's greenlet
        assert_closed_once(served, key, {1008, 1006}, timeout=20)
        time.sleep(1.0)
        released = wait_for(lambda: not fin_wait_1(served.port), 3, interval=0.25)
        assert released, "sockets left in FIN-WAIT-1:\n" + "\n".join(fin_wait_1(served.port))
    finally:
        client.close()
    assert_no_hub_errors(served)


# -- 13: permessage-deflate offers the installed websockets cannot serve -----------------------------


def test_server_max_window_bits_8_offer_gets_101_or_a_clear_4xx(served):
    """websockets < 17 raises zlib's ValueError for server_max_window_bits=8: the old
    engine answers 500. (With websockets >= 17 the old engine passes too.)"""
    request = upgrade_request("/ws/echo", served.port,
                              headers={"Sec-WebSocket-Extensions": "permessage-deflate; server_max_window_bits=8"})
    status, headers, body = http_request(served.port, request, timeout=10)
    if status != 101:
        assert 400 <= status < 500, (status, headers, body)
        reason = body.decode("utf-8", "replace").strip()
        assert reason and "\n" not in reason, body
    # The server is fine afterwards.
    with ws_connect(f"{served.url}/ws/echo", open_timeout=10) as ws:
        ws.send("after")
        assert ws.recv(timeout=10) == "after"
    assert_no_hub_errors(served)


# -- 5: the lifecycle invariants on every path -------------------------------------------------------

LIFECYCLE_PATHS = [
    "peer-close", "peer-close-parked", "server-close", "close-timeout", "close-timeout-parked",
    "keepalive-timeout", "slow-consumer", "slow-consumer-parked", "callback-raises", "rst-parked",
]


def run_path(server, path: str, key: str) -> set:
    """Drive one connection down ``path``; return the close codes on_close may see."""
    port = server.port
    if path in ("peer-close", "peer-close-parked"):
        with ws_connect(f"{server.url}/ws/echo?id={key}", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"
            if path.endswith("parked"):
                time.sleep(2.0)
        return {1000}
    if path in ("server-close", "callback-raises"):
        with ws_connect(f"{server.url}/ws/echo?id={key}", open_timeout=10) as ws:
            ws.send("close" if path == "server-close" else "boom")
            with pytest.raises(WsConnectionClosed) as info:
                ws.recv(timeout=10)
        expected = 4000 if path == "server-close" else 1011
        assert info.value.rcvd is not None and info.value.rcvd.code == expected, info.value
        return {expected}
    if path in ("close-timeout", "close-timeout-parked"):
        client = Client(port, f"/ws/closer?id={key}")
        try:
            if path.endswith("parked"):
                time.sleep(2.0)
                assert get_json(server, f"/close?id={key}&code=4000") == {"ok": True}
            else:
                client.send(TEXT, b"close")
            # Never answers the close frame: close_timeout (0.5 s) ends it.
            frame = client.frame(timeout=10)
            assert frame.opcode == CLOSE and frame.close_code == 4000, frame
            assert drain(client.sock, timeout=10)[0] in ("eof", "reset")
        finally:
            client.close()
        return {4000, 1006}
    if path == "keepalive-timeout":
        client = Client(port, f"/ws/keepalive?id={key}")
        try:
            assert drain(client.sock, timeout=15)[0] in ("eof", "reset")  # reads, but never answers a ping
        finally:
            client.close()
        return {1011, 1006}
    if path in ("slow-consumer", "slow-consumer-parked"):
        client = Client(port, f"/ws/slow?id={key}", rcvbuf=4096)
        try:
            if path.endswith("parked"):
                time.sleep(2.0)
                get_json(server, f"/write?id={key}&count=256&size=65536", timeout=60)
            else:
                client.send(TEXT, b"flood 256 65536")
            assert wait_for(lambda: closes(events(server, key)), 15), events(server, key)
        finally:
            client.close()
        return {1008, 1006}
    if path == "rst-parked":
        client = Client(port, f"/ws/echo?id={key}")
        client.echo(TEXT, b"hello")
        time.sleep(2.0)
        reset(client.sock)
        return {1006}
    raise AssertionError(path)


@pytest.mark.parametrize("path", LIFECYCLE_PATHS)
def test_lifecycle_on_close_once_nothing_left_no_hub_errors(served, path):
    """Every way a connection ends: on_close exactly once, fds and connections back to
    the idle baseline, greenlets within a small slack, nothing printed by the hub."""
    baseline = settled(served)
    key = unique(path)
    codes = run_path(served, path, key)
    found = assert_closed_once(served, key, codes)
    assert found[0] == ["open"], found
    assert_back_to(served, baseline)
    assert_no_hub_errors(served)
