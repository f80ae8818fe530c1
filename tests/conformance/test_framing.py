"""Autobahn 1.x and 10.x: text and binary messages of every length class, whole and chopped."""

import os

import pytest

from .rawclient import BINARY, TEXT, RawClient

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]


def payload_of(length: int, opcode: int) -> bytes:
    if opcode == TEXT:
        return (b"*" * length)
    return os.urandom(length)


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("length", LENGTHS)
def test_message_of_length_is_echoed(server, opcode, length):
    with RawClient(server.port) as client:
        client.echo(opcode, payload_of(length, opcode))
        client.close_cleanly()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_65536_bytes_chopped_into_997_byte_writes(server, opcode):
    payload = payload_of(65536, opcode)
    with RawClient(server.port) as client:
        client.send(opcode, payload, chop=997)
        assert client.message() == (opcode, payload)
        client.close_cleanly()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_frame_in_one_byte_writes(server, opcode):
    # The server must reassemble a frame whose head and length arrive a byte at a time.
    payload = payload_of(300, opcode)
    with RawClient(server.port) as client:
        client.send(opcode, payload, chop=1, delay=0.0005)
        assert client.message() == (opcode, payload)
        client.close_cleanly()


def test_many_messages_in_one_write_come_back_in_order(server):
    from .rawclient import encode_frame

    with RawClient(server.port) as client:
        client.send_raw(b"".join(encode_frame(TEXT, f"message {i}".encode()) for i in range(100)))
        for i in range(100):
            assert client.message() == (TEXT, f"message {i}".encode())
        client.close_cleanly()


@pytest.mark.parametrize("frame_size", [1300, 4096])
def test_auto_fragmented_65536_byte_message(server, frame_size):
    # 10.1.1: a message split into many fragments is one message to the application.
    from .rawclient import CONT

    payload = b"x" * 65536
    with RawClient(server.port) as client:
        pieces = [payload[i : i + frame_size] for i in range(0, len(payload), frame_size)]
        for index, piece in enumerate(pieces):
            client.send(TEXT if index == 0 else CONT, piece, fin=index == len(pieces) - 1)
        assert client.message() == (TEXT, payload)
        client.close_cleanly()
