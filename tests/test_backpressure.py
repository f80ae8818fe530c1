"""A reader that never reads: the others still get everything, the slow one meets its policy.

The server runs in a child process with a 64 KiB ``send_queue_limit`` on the slow
routes; the non-reader is a raw socket with a small receive buffer. Messages are
published in paced batches until the server reports that the policy applied
(bounded), so the test does not depend on how much the kernel buffers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import urllib.request

import pytest
from websockets.sync.client import connect

from .support import RawWebSocket, read_http_response, start_server, upgrade_request

APP = "tests.pubsub_apps:application"
BATCH, SIZE = 100, 16384


class NonReader(RawWebSocket):
    """A raw WebSocket client with a tiny receive buffer; it reads only when the test says so."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(upgrade_request(path, port))
        self.status, self.headers, self.buffer = read_http_response(self.sock)
        assert self.status == 101


@pytest.fixture(scope="module")
def app():
    server = start_server("pywsgi", app=APP)
    yield server
    server.stop()


def stats(server) -> dict:
    with urllib.request.urlopen(f"{server.http}/stats", timeout=10) as response:
        return json.loads(response.read())


def publish_until(server, room: str, done, max_batches: int = 8) -> int:
    """Publish numbered 16 KiB messages in paced batches until ``done(stats)``; return how many."""
    total = 0
    for _ in range(max_batches):
        url = f"{server.http}/publish-many?channel=room:{room}&count={BATCH}&size={SIZE}&interval=0.002&start={total}"
        with urllib.request.urlopen(url, timeout=60) as response:
            assert json.loads(response.read())["ok"]
        total += BATCH
        if done(stats(server)):
            return total
    raise AssertionError(f"the slow consumer never met its policy after {total} messages")


def fast_clients(stack: contextlib.ExitStack, server, room: str) -> list:
    clients = []
    for compression in ("deflate", None, None):
        # max_queue=None: the client library keeps reading into its buffer: a fast reader.
        ws = stack.enter_context(connect(f"{server.url}/ws/room/{room}?hello=1", compression=compression,
                                         max_queue=None, open_timeout=10))
        assert "hello" in json.loads(ws.recv(timeout=10))
        clients.append(ws)
    return clients


def assert_all_received(clients: list, total: int) -> None:
    for ws in clients:
        for i in range(total):
            message = ws.recv(timeout=10)
            assert message.startswith(f"{i}:") and len(message) == len(f"{i}:") + SIZE


def numbered(payload: bytes) -> int:
    return int(payload.split(b":", 1)[0])


def test_slow_reader_is_closed_with_1008_and_the_others_get_everything(app):
    room, path = "bp-close", "/ws/slow/bp-close"
    with contextlib.ExitStack() as stack:
        clients = fast_clients(stack, app, room)
        slow = NonReader(app.port, path)
        try:
            total = publish_until(app, room, lambda s: any(p == path and closing for p, _, closing in s["connections"]))
            assert_all_received(clients, total)
            # Reading at last, the slow client finds, after what got through, a 1008 close frame.
            received = []
            while True:
                opcode, payload, _ = slow.recv_frame()
                if opcode == 0x8:
                    break
                received.append(numbered(payload))
            assert struct.unpack("!H", payload[:2])[0] == 1008
            assert "too slow" in payload[2:].decode()
            assert received == list(range(len(received))) and len(received) < total
            slow.send_frame(0x8, payload[:2])
            assert slow.expect_eof(10)
        finally:
            slow.close()
        for ws in clients:  # the room works as before
            ws.send("still flowing")
        for ws in clients:
            assert [ws.recv(timeout=10) for _ in clients] == ["still flowing"] * len(clients)
    closed = [code for p, code, _, _ in stats(app)["closed"] if p == path]
    assert closed == [1008]


def test_drop_policy_counts_what_the_slow_reader_missed(app):
    room, path = "bp-drop", "/ws/slowdrop/bp-drop"
    with contextlib.ExitStack() as stack:
        clients = fast_clients(stack, app, room)
        slow = NonReader(app.port, path)
        try:
            total = publish_until(app, room, lambda s: any(p == path and dropped for p, dropped, _ in s["connections"]))
            assert_all_received(clients, total)
            [dropped] = [d for p, d, closing in stats(app)["connections"] if p == path and not closing]
            assert dropped > 0
            # The slow reader stays connected; what it gets plus what was dropped is everything.
            received = [numbered(slow.recv_frame()[1]) for _ in range(total - dropped)]
            assert received == sorted(received) and len(set(received)) == total - dropped
            assert received[0] == 0
            # Caught up, it gets new messages again.
            with urllib.request.urlopen(f"{app.http}/publish?channel=room:{room}&text={total}:late", timeout=10):
                pass
            assert slow.recv_frame()[1] == f"{total}:late".encode()
            slow.send_frame(0x8, struct.pack("!H", 1000))
            assert slow.recv_close(10)[0] == 1000
        finally:
            slow.close()
        for ws in clients:
            ws.recv(timeout=10)  # the late one
    closed = [(code, dropped) for p, code, _, dropped in stats(app)["closed"] if p == path]
    assert closed and closed[0][0] == 1000 and closed[0][1] > 0
