"""Autobahn 6.x: UTF-8 in text messages, whole, fragmented and chopped; fail fast on invalid."""

import pytest

from .rawclient import CONT, TEXT, RawClient

VALID = {
    "ascii": b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
    "kosme": "κόσμε".encode(),
    "first-1-byte": b"\x00",
    "first-2-byte": b"\xc2\x80",
    "first-3-byte": b"\xe0\xa0\x80",
    "first-4-byte": b"\xf0\x90\x80\x80",
    "last-1-byte": b"\x7f",
    "last-2-byte": b"\xdf\xbf",
    "last-3-byte": b"\xef\xbf\xbf",
    "last-4-byte": b"\xf4\x8f\xbf\xbf",
    "before-surrogates": b"\xed\x9f\xbf",
    "after-surrogates": b"\xee\x80\x80",
    "replacement-char": b"\xef\xbf\xbd",
    "noncharacter-fffe": b"\xef\xbf\xbe",
    "noncharacter-fdd0": b"\xef\xb7\x90",
    "noncharacter-1ffff": b"\xf0\x9f\xbf\xbf",
    "mixed": "a€𝄞ж中😀z".encode(),
}

INVALID = {
    "beyond-10ffff": b"\xf4\x90\x80\x80",
    "max-4-byte-pattern": b"\xf7\xbf\xbf\xbf",
    "5-byte-sequence": b"\xf8\x88\x80\x80\x80",
    "6-byte-sequence": b"\xfc\x84\x80\x80\x80\x80",
    "lone-continuation": b"\x80",
    "continuations": b"\x80\xbf\x80",
    "lone-start-then-space": b"\xc0 \xe0 ",
    "truncated-2-byte": b"abc\xc2",
    "truncated-3-byte": b"abc\xe0\xa0",
    "truncated-4-byte": b"abc\xf0\x90\x80",
    "impossible-fe": b"\xfe",
    "impossible-ff": b"\xff",
    "overlong-slash-2": b"\xc0\xaf",
    "overlong-slash-3": b"\xe0\x80\xaf",
    "overlong-slash-4": b"\xf0\x80\x80\xaf",
    "overlong-max-2": b"\xc1\xbf",
    "overlong-max-3": b"\xe0\x9f\xbf",
    "overlong-nul": b"\xc0\x80",
    "surrogate-high": b"\xed\xa0\x80",
    "surrogate-low": b"\xed\xbf\xbf",
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "kosme-surrogate-edited": "κόσμε".encode() + b"\xed\xa0\x80edited",
}


@pytest.mark.parametrize("payload", list(VALID.values()), ids=list(VALID))
def test_valid_utf8_is_echoed_whole_fragmented_and_chopped(server, payload):
    with RawClient(server.port) as client:
        client.echo(TEXT, payload)
        # One fragment per byte: code points split across frames (6.2.3, 6.6.x).
        for index in range(len(payload)):
            client.send(TEXT if index == 0 else CONT, payload[index : index + 1], fin=index == len(payload) - 1)
        assert client.message() == (TEXT, payload)
        # One frame, written a byte at a time (6.2.4).
        client.send(TEXT, payload, chop=1)
        assert client.message() == (TEXT, payload)
        client.close_cleanly()


@pytest.mark.parametrize("payload", list(INVALID.values()), ids=list(INVALID))
def test_invalid_utf8_in_one_frame_fails_with_1007(server, payload):
    with RawClient(server.port) as client:
        client.send(TEXT, payload)
        client.expect_fail(1007)


@pytest.mark.parametrize("payload", list(INVALID.values()), ids=list(INVALID))
def test_invalid_utf8_in_one_byte_fragments_fails_with_1007(server, payload):
    with RawClient(server.port) as client:
        for index in range(len(payload)):
            client.send(TEXT if index == 0 else CONT, payload[index : index + 1], fin=index == len(payload) - 1)
        client.expect_fail(1007)


def test_invalid_first_fragment_fails_before_the_message_completes(server):
    with RawClient(server.port) as client:
        client.send(TEXT, b"\xce\xba\xe1\xbd\xb9\xff", fin=False)
        client.expect_fail(1007)


@pytest.mark.parametrize("part2", [b"\xf4\x90\x80\x80", b"\xf4\x90"], ids=["6.4.1", "6.4.2"])
def test_fail_fast_on_the_fragment_that_makes_the_text_invalid(server, part2):
    with RawClient(server.port) as client:
        client.send(TEXT, "κόσμε".encode(), fin=False)
        client.expect_silence(0.2)
        client.send(CONT, part2, fin=False)
        # The close arrives although the message is not complete: the third part
        # (b"edited") is never sent.
        client.expect_fail(1007)


@pytest.mark.parametrize("part2", [b"\xf4\x90\x80\x80", b"\xf4\x90"], ids=["6.4.3", "6.4.4"])
def test_invalid_text_in_one_chopped_frame(server, part2):
    # Autobahn accepts failing at the end of the frame (NON-STRICT) for a single frame.
    part1, part3 = "κόσμε".encode(), b"edited" if len(part2) == 4 else b"\x80\x80edited"
    from .rawclient import encode_frame

    data = encode_frame(TEXT, part1 + part2 + part3)
    head_and_part1 = len(data) - len(part2) - len(part3)
    with RawClient(server.port) as client:
        client.send_raw(data[:head_and_part1])
        client.expect_silence(0.2)
        client.send_raw(data[head_and_part1 : head_and_part1 + len(part2)])
        client.send_raw(data[head_and_part1 + len(part2) :])
        client.expect_fail(1007)


def test_valid_message_then_invalid_one_in_the_same_write(server):
    from .rawclient import encode_frame

    with RawClient(server.port) as client:
        client.send_raw(encode_frame(TEXT, "κόσμε".encode()) + encode_frame(TEXT, b"\xed\xa0\x80"))
        assert client.message() == (TEXT, "κόσμε".encode())
        client.expect_fail(1007)


def test_empty_text_messages(server):
    # 6.1.1
    with RawClient(server.port) as client:
        for _ in range(3):
            client.echo(TEXT, b"")
        client.close_cleanly()
