"""broadcast(): one frame encoding shared by uncompressed connections, never blocking.

Connections here are real ``WebSocket`` objects over real (gevent) socket pairs in
this process; the far end of each pair decodes what arrives with the ``websockets``
sans-I/O client protocol, independently of the server side.
"""

from __future__ import annotations

import gevent
import gevent.socket
import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from wsmiddleware import WS, PubSubWS, broadcast
from wsmiddleware.broadcast import encode_frame
from wsmiddleware.connection import WebSocket
from wsmiddleware.options import Options
from wsmiddleware.pubsub import MemoryPubSub
from wsmiddleware.transport._takeover import transport_for


def deflate() -> PerMessageDeflate:
    return PerMessageDeflate(False, False, 15, 15)


class Peer:
    """The client end of a connection: reads the socket and decodes frames."""

    def __init__(self, sock, compressed: bool) -> None:
        self.sock = sock
        self.protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
        if compressed:
            self.protocol.extensions = [deflate()]
        self.frames: list = []

    def read(self, count: int, timeout: float = 10.0) -> list:
        """The next ``count`` messages as str/bytes, or ("close", code, reason) for a close frame."""
        with gevent.Timeout(timeout):
            while len(self.frames) < count:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError(f"closed after {len(self.frames)} frames")
                self.protocol.receive_data(data)
                for frame in self.protocol.events_received():
                    if frame.opcode is Opcode.TEXT:
                        self.frames.append(frame.data.decode("utf-8"))
                    elif frame.opcode is Opcode.BINARY:
                        self.frames.append(bytes(frame.data))
                    elif frame.opcode is Opcode.CLOSE:
                        close = self.protocol.close_rcvd
                        self.frames.append(("close", close.code if close else None, close.reason if close else ""))
        got, self.frames = self.frames[:count], self.frames[count:]
        return got


_SOCKETS: list = []


@pytest.fixture(autouse=True)
def close_sockets():
    yield
    while _SOCKETS:
        _SOCKETS.pop().close()


def make_connection(compressed: bool = False, **options) -> tuple[WebSocket, Peer]:
    server_sock, client_sock = gevent.socket.socketpair()
    _SOCKETS.extend((server_sock, client_sock))
    protocol = Protocol(Side.SERVER, state=State.OPEN)
    if compressed:
        protocol.extensions = [deflate()]
    transport = transport_for(server_sock, pending=b"", remote_addr=None, detach=True)
    websocket = WebSocket(transport, protocol, WS(), Options(ping_interval=None).merged(options), compressed=compressed)
    return websocket, Peer(client_sock, compressed)


@pytest.mark.parametrize("message", ["text é✓", b"\x00\xffbinary", "", b"", "x" * 70000])
def test_every_connection_gets_the_message_with_its_type(message):
    pairs = [make_connection(compressed=i % 3 == 0) for i in range(30)]
    assert broadcast([ws for ws, _ in pairs], message) == 30
    for _, peer in pairs:
        got = peer.read(1)
        assert got == [message] and type(got[0]) is type(message)


def test_uncompressed_connections_share_one_encoded_frame():
    pairs = [make_connection() for _ in range(10)]
    compressed = [make_connection(compressed=True) for _ in range(3)]
    # Fill each socket so that the next frame waits in the connection's queue, where we can see it.
    filler = b"f" * 65536
    for ws, _ in pairs:
        while not ws._writer.queue:
            ws.write(filler)
    message = "shared " * 100
    assert broadcast([ws for ws, _ in pairs + compressed], message) == 13
    queued = [ws._writer.queue[-1] for ws, _ in pairs]
    assert all(frame is queued[0] for frame in queued)
    assert queued[0] == encode_frame(message)
    for _, peer in compressed:
        assert peer.read(1) == [message]


def test_broadcast_never_waits_for_a_slow_reader():
    fast = [make_connection() for _ in range(5)]
    slow, slow_peer = make_connection(send_queue_limit=64 * 1024)
    ran = []
    gevent.spawn(ran.append, "another greenlet ran")
    message = b"m" * 16384
    for _ in range(100):  # 1.6 MB: far over the slow connection's limit, under the fast ones'
        broadcast([slow] + [ws for ws, _ in fast], message)
    # Nothing above yielded to the hub: broadcast queued and returned every time.
    assert ran == []
    assert slow.closed and slow.close_code == 1008
    for _, peer in fast:
        assert peer.read(100) == [message] * 100
    frames = slow_peer.read(1)
    while frames[-1] == message:
        frames = slow_peer.read(1)
    assert frames[-1][:2] == ("close", 1008)


def test_closed_connections_are_skipped_and_not_counted():
    pairs = [make_connection() for _ in range(4)]
    pairs[1][0].close()
    pairs[3][0].close(1001, "going away")
    assert broadcast([ws for ws, _ in pairs], "to the open ones") == 2
    assert pairs[0][1].read(1) == ["to the open ones"]
    assert pairs[1][1].read(1) == [("close", 1000, "")]


def test_drop_policy_connections_are_not_counted_when_they_drop():
    ws, peer = make_connection(send_queue_limit=1024, slow_consumer="drop")
    # Fill what the socket takes: what the kernel holds unsent counts against the limit.
    accepted = 0
    while not ws.dropped:
        ws.write(b"f" * 65536)
        accepted += 1
        assert accepted < 1000, "the kernel never counted"
    accepted -= ws.dropped
    # Over the limit: every message is dropped and counted, and the connection stays open.
    before = ws.dropped
    assert [broadcast([ws], b"x" * 4096) for _ in range(5)] == [0] * 5
    assert ws.dropped == before + 5
    assert not ws.closed
    # Once the reader catches up, messages flow again.
    assert peer.read(accepted) == [b"f" * 65536] * accepted
    assert broadcast([ws], "flowing again") == 1
    assert peer.read(1) == ["flowing again"]


@pytest.mark.parametrize("bad", [1, None, 2.5])
def test_only_str_and_bytes(bad):
    ws, _ = make_connection()
    with pytest.raises(TypeError):
        broadcast([ws], bad)


def test_memory_pubsub_fans_out_to_websockets_through_broadcast():
    pubsub = MemoryPubSub()
    pairs = [make_connection(compressed=i % 2 == 0) for i in range(6)]
    for ws, _ in pairs:
        pubsub.subscribe("room", ws)
    assert pubsub.publish("room", "to all", sender=pairs[0][0]) == 5
    assert pubsub.publish("room", b"bytes to all") == 6
    assert pairs[0][1].read(1) == [b"bytes to all"]
    for _, peer in pairs[1:]:
        assert peer.read(2) == ["to all", b"bytes to all"]


def test_pubsubws_channel_templates_and_callables():
    pubsub = MemoryPubSub()
    ws, _ = make_connection()
    ws.url_vars = {"room": "r1", "n": 7}
    assert PubSubWS(pubsub, "room:{room}:{n}").channel_for(ws) == "room:r1:7"
    assert PubSubWS(pubsub, "lobby").channel_for(ws) == "lobby"
    assert PubSubWS(pubsub, lambda websocket: f"cb:{websocket.url_vars['room']}").channel_for(ws) == "cb:r1"
    with pytest.raises(KeyError):
        PubSubWS(pubsub, "room:{missing}").channel_for(ws)
    with pytest.raises(ValueError):
        PubSubWS(pubsub, lambda websocket: "").channel_for(ws)


def test_memory_pubsub_fan_out_to_500_websockets_once_each_in_order():
    pubsub = MemoryPubSub()
    pairs = [make_connection(compressed=i % 10 == 0) for i in range(500)]
    for ws, _ in pairs:
        pubsub.subscribe("crowd", ws)

    def publish(name: str) -> None:
        for i in range(20):
            assert pubsub.publish("crowd", f"{name}:{i}") == 500
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(publish, name) for name in ("a", "b")], timeout=30, raise_error=True)
    for _, peer in pairs:
        got = peer.read(40)
        assert [m for m in got if m.startswith("a:")] == [f"a:{i}" for i in range(20)]
        assert [m for m in got if m.startswith("b:")] == [f"b:{i}" for i in range(20)]
    for ws, _ in pairs:
        pubsub.unsubscribe("crowd", ws)
    assert pubsub.subscription_count() == 0
