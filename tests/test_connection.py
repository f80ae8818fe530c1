"""The connection engine and the WS callbacks, end to end with real clients."""

import json
import struct
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .conftest import events, wait_events
from .support import RawWebSocket


def unique(name: str) -> str:
    return f"{name}-{time.monotonic_ns()}"


def test_text_and_binary_echo(server):
    with connect(f"{server.url}/ws/echo") as ws:
        ws.send("héllo ☃")
        assert ws.recv(timeout=5) == "héllo ☃"
        ws.send(b"\x00\xffbinary")
        assert ws.recv(timeout=5) == b"\x00\xffbinary"
        ws.send("")
        assert ws.recv(timeout=5) == ""


def test_fragmented_messages_are_reassembled(server):
    with connect(f"{server.url}/ws/echo") as ws:
        ws.send(iter(["ab", "cd", "☃"]))
        assert ws.recv(timeout=5) == "abcd☃"
        ws.send(iter([b"\x01", b"\x02", b"\x03"]))
        assert ws.recv(timeout=5) == b"\x01\x02\x03"


def test_callbacks_run_in_order_and_on_close_exactly_once(server):
    key = unique("order")
    with connect(f"{server.url}/ws/record?id={key}", compression=None) as ws:
        for i in range(20):
            ws.send(f"m{i}")
        ws.send(b"12345")
        for i in range(20):
            assert ws.recv(timeout=5) == f"m{i}"
        assert ws.recv(timeout=5) == b"12345"
        ws.close(1000, "done here")
    found = wait_events(server, key, lambda e: any(x[0] == "close" for x in e))
    assert found[0] == ["open"]
    assert found[1:21] == [["message", f"m{i}"] for i in range(20)]
    assert found[21] == ["bytes", 5]
    closes = [x for x in found if x[0] == "close"]
    assert closes == [["close", 1000, "done here"]]
    time.sleep(0.2)
    assert [x for x in events(server, key) if x[0] == "close"] == closes


def test_abrupt_disconnect_calls_on_close_with_1006(server):
    key = unique("abrupt")
    raw = RawWebSocket(server.port, f"/ws/record?id={key}")
    raw.send_frame(0x1, b"x")
    assert raw.recv_frame()[:2] == (0x1, b"x")
    raw.close()
    found = wait_events(server, key, lambda e: any(x[0] == "close" for x in e))
    assert [x for x in found if x[0] == "close"] == [["close", 1006, ""]]


def test_client_ping_reaches_on_ping_and_default_answers_pong(server):
    key = unique("ping")
    raw = RawWebSocket(server.port, f"/ws/record?id={key}")
    raw.send_frame(0x9, b"are you there")
    assert raw.recv_frame()[:2] == (0xA, b"are you there")
    raw.send_frame(0xA, b"unsolicited")
    raw.send_frame(0x1, b"after")
    assert raw.recv_frame()[:2] == (0x1, b"after")
    raw.close()
    found = wait_events(server, key, lambda e: any(x[0] == "close" for x in e))
    assert ["ping", "are you there"] in found
    assert ["pong", "unsolicited"] in found


def test_server_ping_waiter_resolves_on_matching_pong(server):
    with connect(f"{server.url}/ws/ping") as ws:
        ws.send("ping")
        answer = ws.recv(timeout=5)
        assert answer.startswith("pong after ")
        assert 0 <= float(answer.split()[-1]) < 2


def test_waiting_for_a_pong_inside_a_callback_is_refused_not_deadlocked(server):
    with connect(f"{server.url}/ws/ping") as ws:
        ws.send("wait-inline")
        assert ws.recv(timeout=5).startswith("refused: cannot wait for a pong inside a callback")


def test_server_ping_waiter_times_out_without_pong(server):
    raw = RawWebSocket(server.port, "/ws/ping")
    raw.send_frame(0x1, b"ping")
    opcode, payload, _ = raw.recv_frame()
    assert opcode == 0x9 and len(payload) == 4  # a unique payload
    raw.sock.settimeout(5)
    # A pong with another payload must not resolve the waiter.
    raw.send_frame(0xA, b"nope")
    opcode, payload, _ = raw.recv_frame()
    assert (opcode, payload) == (0x1, b"ping timeout")
    raw.close()


def test_server_close_with_code_and_reason(server):
    with connect(f"{server.url}/ws/closer?code=4000&reason=bye") as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert ws.protocol.close_code == 4000  # the sync client has close_code only since websockets 14.1
    assert ws.protocol.close_reason == "bye"


def test_server_close_is_bounded_by_close_timeout_when_peer_never_answers(server):
    key = unique("closetimeout")
    raw = RawWebSocket(server.port, f"/ws/record?id={key}")
    raw.send_frame(0x1, b"close-me")
    code, reason = raw.recv_close()
    assert (code, reason) == (4001, "asked to")
    # We never answer the close frame; the server drops us after close_timeout (5 s by default).
    assert raw.expect_eof(timeout=8)
    found = wait_events(server, key, lambda e: any(x[0] == "close" for x in e))
    assert [x for x in found if x[0] == "close"] == [["close", 4001, "asked to"]]


def test_raising_callback_closes_only_its_connection_with_1011(server):
    with connect(f"{server.url}/ws/echo") as bystander, connect(f"{server.url}/ws/raise") as victim:
        victim.send("fine")
        assert victim.recv(timeout=5) == "fine"
        victim.send("boom")
        with pytest.raises(ConnectionClosed):
            victim.recv(timeout=5)
        assert victim.protocol.close_code == 1011
        bystander.send("still here")
        assert bystander.recv(timeout=5) == "still here"
    assert "RuntimeError: boom requested by the test" in server.log()
    assert "Traceback" in server.log()


def test_class_route_gets_one_handler_instance_per_connection(server):
    with connect(f"{server.url}/ws/counter") as a, connect(f"{server.url}/ws/counter") as b:
        a.send("x")
        a.send("x")
        assert [a.recv(timeout=5), a.recv(timeout=5)] == ["1", "2"]
        b.send("x")
        assert b.recv(timeout=5) == "1"


def test_websocket_attributes(server):
    with connect(f"{server.url}/ws/info/lobby/42", subprotocols=["v1.chat"]) as ws:
        info = json.loads(ws.recv(timeout=5))
    assert info["path"] == "/ws/info/lobby/42"
    assert info["url_vars"] == {"room": ["str", "lobby"], "num": ["int", "42"]}
    assert info["subprotocol"] == "v1.chat"
    assert info["remote_addr"] == "127.0.0.1"
    assert info["request_path"] == "/ws/info/lobby/42"
    assert info["state"] == {"opened": True}


def test_spawned_producer_writes_and_is_killed_on_close(server):
    key = unique("producer")
    with connect(f"{server.url}/ws/produce?id={key}") as ws:
        ticks = [ws.recv(timeout=5) for _ in range(5)]
    assert ticks == [f"tick {i}" for i in range(5)]
    found = wait_events(server, key, lambda e: any(x[0] == "close" for x in e))
    assert [x for x in found if x[0] == "close"] == [["close", 1000, ""]]


def test_writes_from_many_greenlets_are_all_delivered_whole(server):
    with connect(f"{server.url}/ws/cross", max_size=None) as ws:
        ws.send("300")
        received = [ws.recv(timeout=5) for _ in range(301)]
    assert received[-1] == "done"
    assert sorted(received[:-1], key=int) == [str(i) for i in range(300)]


# -- protocol violations, with raw frames ------------------------------------------


def close_after(server, *frames, path="/ws/echo"):
    raw = RawWebSocket(server.port, path)
    try:
        for kwargs in frames:
            raw.send_frame(**kwargs)
        return raw.recv_close()
    finally:
        raw.close()


@pytest.mark.parametrize("frames,code", [
    pytest.param([dict(opcode=0x1, payload=b"hi", mask=False)], 1002, id="unmasked-client-frame"),
    pytest.param([dict(opcode=0x1, payload=b"hi", rsv=0b100)], 1002, id="rsv1-without-extension"),
    pytest.param([dict(opcode=0x1, payload=b"hi", rsv=0b010)], 1002, id="rsv2"),
    pytest.param([dict(opcode=0x1, payload=b"hi", rsv=0b001)], 1002, id="rsv3"),
    pytest.param([dict(opcode=0x3)], 1002, id="reserved-data-opcode-3"),
    pytest.param([dict(opcode=0x7)], 1002, id="reserved-data-opcode-7"),
    pytest.param([dict(opcode=0xB)], 1002, id="reserved-control-opcode-B"),
    pytest.param([dict(opcode=0xF)], 1002, id="reserved-control-opcode-F"),
    pytest.param([dict(opcode=0x1, payload=b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")], 1007,
                 id="invalid-utf8-text"),
    pytest.param([dict(opcode=0x1, payload=b"\xff", fin=False)], 1007, id="invalid-utf8-first-fragment"),
    pytest.param([dict(opcode=0x8, payload=struct.pack("!H", 1000) + b"\xff\xfe")], 1007, id="invalid-utf8-reason"),
    pytest.param([dict(opcode=0x9, payload=b"x" * 126)], 1002, id="ping-over-125"),
    pytest.param([dict(opcode=0x8, payload=struct.pack("!H", 1000) + b"x" * 124)], 1002, id="close-over-125"),
    pytest.param([dict(opcode=0x9, payload=b"x", fin=False)], 1002, id="fragmented-ping"),
    pytest.param([dict(opcode=0x0, payload=b"x")], 1002, id="continuation-without-start"),
    pytest.param([dict(opcode=0x1, payload=b"a", fin=False), dict(opcode=0x1, payload=b"b")], 1002,
                 id="new-message-inside-fragmented-one"),
    pytest.param([dict(opcode=0x8, payload=struct.pack("!H", 1005))], 1002, id="close-code-1005"),
    pytest.param([dict(opcode=0x8, payload=struct.pack("!H", 1006))], 1002, id="close-code-1006"),
    pytest.param([dict(opcode=0x8, payload=struct.pack("!H", 1015))], 1002, id="close-code-1015"),
    pytest.param([dict(opcode=0x8, payload=struct.pack("!H", 999))], 1002, id="close-code-999"),
    pytest.param([dict(opcode=0x8, payload=struct.pack("!H", 5000))], 1002, id="close-code-5000"),
    pytest.param([dict(opcode=0x8, payload=b"\x03")], 1002, id="close-payload-one-byte"),
])
def test_protocol_violations_close_with_the_right_code(server, frames, code):
    assert close_after(server, *frames)[0] == code


def test_message_over_max_message_size_closes_1009(server):
    code, _ = close_after(server, dict(opcode=0x2, payload=b"x" * 1001), path="/ws/small")
    assert code == 1009
    # Also when the limit is crossed by fragments adding up.
    code, _ = close_after(server, dict(opcode=0x2, payload=b"x" * 600, fin=False),
                          dict(opcode=0x0, payload=b"x" * 600), path="/ws/small")
    assert code == 1009


def test_default_limit_is_one_mib(server):
    with connect(f"{server.url}/ws/echo", max_size=None, compression=None) as ws:
        ws.send(b"y" * 2**20)
        assert len(ws.recv(timeout=10)) == 2**20
    code, _ = close_after(server, dict(opcode=0x2, payload=b"y" * (2**20 + 1)))
    assert code == 1009


def test_valid_close_codes_are_echoed(server):
    for code in (1000, 1001, 3000, 4999):
        assert close_after(server, dict(opcode=0x8, payload=struct.pack("!H", code) + b"ok")) == (code, "ok")
    assert close_after(server, dict(opcode=0x8, payload=b"")) == (None, "")


@pytest.mark.parametrize("length", [65536, 65537, 2**20, 2**24 + 3])
@pytest.mark.parametrize("opcode", ["TEXT", "BINARY"])
def test_big_frames_get_the_header_websockets_would_write(opcode, length):
    from websockets.frames import Frame, Opcode

    from wsmiddleware._frames import large_frame_header as _large_frame_header

    payload = b"a" * length
    frame = Frame(Opcode[opcode], payload).serialize(mask=False)
    assert _large_frame_header(Opcode[opcode], length) + payload == frame


def test_big_messages_survive_a_reader_slower_than_the_socket(server):
    """Partly sent big frames (header and payload written apart) continue whole."""
    import hashlib

    # Within the default max_message_size (1 MiB), more than loopback buffers hold.
    sizes = [2**16, 2**20 - 7, 2**17 + 1] + [2**20] * 9
    with connect(f"{server.url}/ws/echo", max_size=None) as ws:
        payloads = [hashlib.sha256(str(n).encode()).digest() * (n // 32) + b"x" * (n % 32) for n in sizes]
        for payload in payloads:
            ws.send(payload)
        text = "é" * (2**18)
        ws.send(text)
        time.sleep(0.3)  # let the server fill the socket while we do not read
        for payload in payloads:
            assert ws.recv(timeout=10) == payload
        assert ws.recv(timeout=10) == text
