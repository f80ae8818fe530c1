"""Autobahn 3.x and 4.x: reserved bits and reserved opcodes fail the connection (1002).

Where a valid message precedes the bad frame, its echo comes first (the strict
outcome), and a ping sent after the bad frame gets no pong.
"""

import pytest

from .rawclient import BINARY, CLOSE, PING, TEXT, Frame, RawClient, encode_frame

NO_EXTENSION = {"Sec-WebSocket-Extensions": ""}


@pytest.mark.parametrize("rsv", [1, 2, 3, 4, 5, 6, 7])
def test_text_with_reserved_bits_fails(server, rsv):
    # Without permessage-deflate every RSV bit is reserved (RSV1 included).
    with RawClient(server.port, "/ws/nocompress") as client:
        client.send(TEXT, b"Hello, world!", rsv=rsv)
        client.expect_fail(1002)


@pytest.mark.parametrize("chop", [None, 1], ids=["one-write", "chopped"])
def test_valid_message_then_rsv_frame_then_ping(server, chop):
    # 3.2-3.4: the first message is echoed, the bad one fails the connection, no pong.
    with RawClient(server.port, "/ws/nocompress") as client:
        data = (encode_frame(TEXT, b"Hello, world!") + encode_frame(TEXT, b"Hello, world!", rsv=3)
                + encode_frame(PING))
        client.send_raw(data, chop=chop, delay=0.0005 if chop else 0.0)
        assert client.message() == (TEXT, b"Hello, world!")
        client.expect_fail(1002)


@pytest.mark.parametrize("opcode,rsv", [(BINARY, 5), (PING, 6), (CLOSE, 7)], ids=["binary", "ping", "close"])
def test_other_frames_with_reserved_bits_fail(server, opcode, rsv):
    payload = b"\x03\xe8" if opcode == CLOSE else b"\x00\xff\xfe\xfd"
    with RawClient(server.port, "/ws/nocompress") as client:
        client.send(opcode, payload, rsv=rsv)
        client.expect_fail(1002)


def test_rsv2_fails_even_with_deflate_negotiated(server):
    # permessage-deflate defines RSV1 only.
    with RawClient(server.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"}) as client:
        assert "permessage-deflate" in client.headers.get("sec-websocket-extensions", "")
        client.send(TEXT, b"Hello", rsv=2)
        client.expect_fail(1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
@pytest.mark.parametrize("payload", [b"", b"reserved opcode payload"], ids=["empty", "payload"])
def test_reserved_opcode_fails(server, opcode, payload):
    with RawClient(server.port) as client:
        client.send(opcode, payload)
        client.expect_fail(1002)


@pytest.mark.parametrize("opcode", [5, 6, 7, 0xD, 0xE, 0xF])
def test_message_then_reserved_opcode_then_ping(server, opcode):
    # 4.1.3-4.1.5, 4.2.3-4.2.5: echo of the message, then 1002, and no pong.
    with RawClient(server.port) as client:
        client.send_raw(encode_frame(TEXT, b"Hello, world!") + encode_frame(opcode, b"x") + encode_frame(PING))
        assert client.frame() == Frame(TEXT, b"Hello, world!")
        client.expect_fail(1002)
