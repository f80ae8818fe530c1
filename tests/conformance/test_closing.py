"""Autobahn 7.x: the closing handshake, close codes and reasons, data after close."""

import pytest

from .rawclient import CLOSE, PING, TEXT, Frame, RawClient, close_payload, encode_frame

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


def test_message_then_close_gets_echo_then_close(server):
    # 7.1.1, in one write: the message that came first is answered first.
    with RawClient(server.port) as client:
        client.send_raw(encode_frame(TEXT, b"Hello World!") + encode_frame(CLOSE, close_payload(1000)))
        assert client.message() == (TEXT, b"Hello World!")
        client.expect_close(1000)


def test_many_messages_then_close_in_one_write(server):
    with RawClient(server.port) as client:
        client.send_raw(b"".join(encode_frame(TEXT, f"{i}".encode()) for i in range(50))
                        + encode_frame(PING, b"last ping") + encode_frame(CLOSE, close_payload(1000)))
        for i in range(50):
            assert client.message() == (TEXT, f"{i}".encode())
        assert client.frame() == Frame(0xA, b"last ping")
        client.expect_close(1000)


@pytest.mark.parametrize("after", [
    encode_frame(CLOSE, close_payload(1000)),
    encode_frame(PING, b"out of band ping"),
    encode_frame(TEXT, b"out of band text"),
], ids=["7.1.2-close", "7.1.3-ping", "7.1.4-text"])
def test_nothing_is_answered_after_close(server, after):
    with RawClient(server.port) as client:
        client.send_raw(encode_frame(CLOSE, close_payload(1000)) + after)
        client.expect_close(1000)


def test_close_in_the_middle_of_a_fragmented_message(server):
    # 7.1.5: the close is answered, and nothing after it. websockets' protocol
    # (like Autobahn's NON-STRICT reading) answers the unfinished message with 1002.
    with RawClient(server.port) as client:
        client.send_raw(encode_frame(TEXT, b"fragment1", fin=False) + encode_frame(CLOSE, close_payload(1000))
                        + encode_frame(0, b"fragment2"))
        frame = client.frame()
        assert frame.opcode == CLOSE and frame.close_code in (1000, 1002), frame
        client.expect_eof()


def test_large_message_then_close(server):
    # 7.1.6: 256 KiB then close then ping; the close is answered with 1000, no pong.
    payload = b"BAsd7&jh23" * 26214
    with RawClient(server.port) as client:
        client.send_raw(encode_frame(TEXT, payload) + encode_frame(CLOSE, close_payload(1000))
                        + encode_frame(PING, b"ping"))
        assert client.message() == (TEXT, payload)
        client.expect_close(1000)


def test_close_without_payload_is_echoed_empty(server):
    # 7.3.1
    with RawClient(server.port) as client:
        client.send(CLOSE, b"")
        frame = client.frame()
        assert frame.opcode == CLOSE and frame.payload == b""
        client.expect_eof()


def test_close_with_one_byte_payload_fails(server):
    # 7.3.2
    with RawClient(server.port) as client:
        client.send(CLOSE, b"\x03")
        client.expect_fail(1002)


@pytest.mark.parametrize("reason", [b"", b"Hello World!", b"*" * 123], ids=["7.3.3", "7.3.4", "7.3.5"])
def test_close_with_code_and_reason_is_echoed(server, reason):
    with RawClient(server.port) as client:
        client.send(CLOSE, close_payload(1000, reason))
        frame = client.expect_close(1000)
        assert frame.close_reason == reason


def test_close_with_124_byte_reason_fails(server):
    # 7.3.6: the control frame payload would be 126 bytes.
    with RawClient(server.port) as client:
        client.send(CLOSE, close_payload(1000, b"*" * 124))
        client.expect_fail(1002)


def test_close_reason_with_invalid_utf8_fails_with_1007(server):
    # 7.5.1
    with RawClient(server.port) as client:
        client.send(CLOSE, close_payload(1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")
        client.expect_fail(1007)


def test_close_reason_with_valid_utf8_is_echoed(server):
    reason = "κόσμε: goodbye 👋".encode()
    with RawClient(server.port) as client:
        client.send(CLOSE, close_payload(1000, reason))
        assert client.expect_close(1000).close_reason == reason


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_is_echoed(server, code):
    # 7.7.x
    with RawClient(server.port) as client:
        client.send(CLOSE, close_payload(code))
        client.expect_close(code)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_fails_with_1002(server, code):
    # 7.9.x and 7.13.x: reserved, never-on-the-wire and out-of-range codes.
    with RawClient(server.port) as client:
        client.send(CLOSE, close_payload(code, b"reason"))
        client.expect_fail(1002)


def test_server_initiated_close_completes_when_client_answers(server):
    with RawClient(server.port, "/ws/closer?code=4001&reason=bye") as client:
        frame = client.frame()
        assert frame.opcode == CLOSE and frame.close_code == 4001 and frame.close_reason == b"bye"
        client.send(CLOSE, frame.payload)
        client.expect_eof()


def test_closing_handshake_after_messages(server):
    with RawClient(server.port) as client:
        client.echo(TEXT, b"one")
        client.echo(TEXT, b"two")
        client.close_cleanly(3000, "done")
