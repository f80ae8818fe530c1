"""Autobahn 9.x: large messages up to the configured limit (1 MiB), and 1009 beyond it."""

import os

import pytest

from .rawclient import BINARY, CONT, TEXT, RawClient

LIMIT = 2**20  # the default max_message_size


def payload_of(length: int, opcode: int) -> bytes:
    return b"x" * length if opcode == TEXT else os.urandom(length)


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("length", [64 * 1024, 256 * 1024, LIMIT], ids=["64K", "256K", "1M"])
def test_large_message_is_echoed(server, opcode, length):
    payload = payload_of(length, opcode)
    with RawClient(server.port, timeout=15) as client:
        client.echo(opcode, payload)
        client.close_cleanly()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("fragment", [64, 4096, 65536, LIMIT // 2], ids=["64", "4K", "64K", "512K"])
def test_limit_sized_message_in_fragments(server, opcode, fragment):
    # 9.3.x / 9.4.x, scaled to the configured limit.
    payload = payload_of(LIMIT, opcode)
    pieces = [payload[i : i + fragment] for i in range(0, len(payload), fragment)]
    with RawClient(server.port, timeout=15) as client:
        from .rawclient import encode_frame

        client.send_raw(b"".join(encode_frame(opcode if i == 0 else CONT, piece, fin=i == len(pieces) - 1)
                                 for i, piece in enumerate(pieces)))
        assert client.message() == (opcode, payload)
        client.close_cleanly()


@pytest.mark.parametrize("chop", [64, 4096], ids=["64", "4K"])
def test_limit_sized_message_in_chopped_writes(server, chop):
    # 9.5.x / 9.6.x: one frame written in small pieces.
    payload = payload_of(LIMIT // 4, BINARY)
    with RawClient(server.port, timeout=15) as client:
        client.send(BINARY, payload, chop=chop)
        assert client.message() == (BINARY, payload)
        client.close_cleanly()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("size", [0, 64, 1024, 4096])
def test_many_messages_in_a_row(server, opcode, size):
    # 9.7.x / 9.8.x: a thousand messages, sent back to back, all echoed in order.
    payload = payload_of(size, opcode)
    with RawClient(server.port, timeout=15) as client:
        from .rawclient import encode_frame

        client.send_raw(encode_frame(opcode, payload) * 1000)
        for _ in range(1000):
            assert client.message() == (opcode, payload)
        client.close_cleanly()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_one_frame_over_the_limit_fails_with_1009(server, opcode):
    with RawClient(server.port, timeout=15) as client:
        client.send(opcode, payload_of(LIMIT + 1, opcode))
        client.expect_fail(1009)


def test_frame_header_announcing_too_much_fails_before_the_payload(server):
    # The length field alone is enough to refuse: nothing of the payload is needed.
    from .rawclient import encode_frame

    with RawClient(server.port) as client:
        client.send_raw(encode_frame(BINARY, b"", length=2**40)[:14])
        client.expect_fail(1009)


def test_fragments_adding_up_over_the_limit_fail_with_1009(server):
    chunk = b"y" * (LIMIT // 4)
    with RawClient(server.port, timeout=15) as client:
        client.send(TEXT, chunk, fin=False)
        for _ in range(3):
            client.send(CONT, chunk, fin=False)
        # The limit is reached exactly; one more byte is too many, before the message ends.
        client.send(CONT, b"z", fin=False)
        client.expect_fail(1009)


def test_per_route_limit(server):
    # /ws/small is mounted with max_message_size=1000.
    with RawClient(server.port, "/ws/small") as client:
        client.echo(BINARY, b"a" * 1000)
        client.send(BINARY, b"a" * 1001)
        client.expect_fail(1009)
