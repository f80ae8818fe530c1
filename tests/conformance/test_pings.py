"""Autobahn 2.x: pings get pongs with the same payload, within the 125-byte limit."""

import os

import pytest

from .rawclient import PING, PONG, TEXT, Frame, RawClient


@pytest.mark.parametrize("payload", [
    b"",
    b"Hello, world!",
    bytes([0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF]),
    b"*" * 125,
], ids=["empty", "text", "binary", "125-bytes"])
def test_ping_gets_pong_with_same_payload(server, payload):
    with RawClient(server.port) as client:
        client.send(PING, payload)
        assert client.frame() == Frame(PONG, payload)
        client.close_cleanly()


def test_ping_with_126_byte_payload_fails_with_1002(server):
    with RawClient(server.port) as client:
        client.send(PING, b"*" * 126)
        client.expect_fail(1002)


def test_ping_with_125_bytes_in_one_byte_writes(server):
    payload = os.urandom(125)
    with RawClient(server.port) as client:
        client.send(PING, payload, chop=1, delay=0.0005)
        assert client.frame() == Frame(PONG, payload)
        client.close_cleanly()


@pytest.mark.parametrize("payload", [b"", b"unsolicited pong payload"], ids=["empty", "payload"])
def test_unsolicited_pong_gets_no_answer(server, payload):
    with RawClient(server.port) as client:
        client.send(PONG, payload)
        client.expect_silence()
        client.close_cleanly()


def test_unsolicited_pong_then_ping_gets_only_the_pong(server):
    with RawClient(server.port) as client:
        client.send(PONG, b"unsolicited pong payload")
        client.send(PING, b"ping payload")
        assert client.frame() == Frame(PONG, b"ping payload")
        client.expect_silence()
        client.close_cleanly()


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
def test_ten_pings_get_ten_pongs_in_order(server, chop):
    with RawClient(server.port) as client:
        for i in range(10):
            client.send(PING, f"payload-{i}".encode(), chop=chop)
        for i in range(10):
            assert client.frame() == Frame(PONG, f"payload-{i}".encode())
        client.close_cleanly()


def test_many_pings_interleaved_with_messages(server):
    with RawClient(server.port) as client:
        for i in range(200):
            client.send(PING, str(i).encode())
            client.send(TEXT, f"m{i}")
        pongs, messages = [], []
        while len(pongs) < 200 or len(messages) < 200:
            frame = client.frame()
            (pongs if frame.opcode == PONG else messages).append(frame.payload)
        assert pongs == [str(i).encode() for i in range(200)]
        assert messages == [f"m{i}".encode() for i in range(200)]
        client.close_cleanly()
