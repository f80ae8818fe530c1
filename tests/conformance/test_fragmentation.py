"""Autobahn 5.x: fragmented messages, control frames between fragments, bad continuations."""

import pytest

from .rawclient import BINARY, CONT, PING, PONG, TEXT, Frame, RawClient, encode_frame


@pytest.mark.parametrize("opcode", [PING, PONG], ids=["ping", "pong"])
def test_fragmented_control_frame_fails(server, opcode):
    # 5.1, 5.2: control frames must not be fragmented.
    with RawClient(server.port) as client:
        client.send(opcode, b"fragment1", fin=False)
        client.send(CONT, b"fragment2")
        client.expect_fail(1002)


@pytest.mark.parametrize("mode", ["one-write", "chopped", "frame-by-frame"])
def test_text_in_two_fragments(server, mode):
    # 5.3-5.5
    with RawClient(server.port) as client:
        data = encode_frame(TEXT, b"fragment1", fin=False) + encode_frame(CONT, b"fragment2")
        if mode == "frame-by-frame":
            client.send(TEXT, b"fragment1", fin=False, chop=1, delay=0.001)
            client.send(CONT, b"fragment2", chop=1, delay=0.001)
        else:
            client.send_raw(data, chop=1 if mode == "chopped" else None, delay=0.0005 if mode == "chopped" else 0.0)
        assert client.message() == (TEXT, b"fragment1fragment2")
        client.close_cleanly()


@pytest.mark.parametrize("mode", ["one-write", "chopped", "frame-by-frame"])
def test_ping_between_fragments_is_answered_first(server, mode):
    # 5.6-5.8: the pong comes before the echo of the completed message.
    with RawClient(server.port) as client:
        frames = [encode_frame(TEXT, b"fragment1", fin=False), encode_frame(PING, b"ping payload"),
                  encode_frame(CONT, b"fragment2")]
        if mode == "frame-by-frame":
            for frame in frames:
                client.send_raw(frame, chop=1, delay=0.0005)
        else:
            client.send_raw(b"".join(frames), chop=1 if mode == "chopped" else None,
                            delay=0.0005 if mode == "chopped" else 0.0)
        assert client.frame() == Frame(PONG, b"ping payload")
        assert client.message() == (TEXT, b"fragment1fragment2")
        client.close_cleanly()


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "no-fin"])
@pytest.mark.parametrize("mode", ["one-write", "chopped"])
def test_continuation_without_a_message_fails(server, fin, mode):
    # 5.9-5.14: a continuation with nothing to continue, then a valid message that is never echoed.
    with RawClient(server.port) as client:
        data = (encode_frame(CONT, b"non-continuation payload", fin=fin) + encode_frame(TEXT, b"Hello, world!"))
        client.send_raw(data, chop=1 if mode == "chopped" else None, delay=0.0005 if mode == "chopped" else 0.0)
        client.expect_fail(1002)


def test_two_messages_then_stray_continuation(server):
    # 5.15: the first complete message is echoed, then the stray continuation fails.
    with RawClient(server.port) as client:
        client.send_raw(encode_frame(TEXT, b"fragment1", fin=False) + encode_frame(CONT, b"fragment2")
                        + encode_frame(CONT, b"fragment3", fin=False) + encode_frame(TEXT, b"fragment4"))
        assert client.message() == (TEXT, b"fragment1fragment2")
        client.expect_fail(1002)


@pytest.mark.parametrize("last_fin", [False, True], ids=["5.16", "5.17"])
def test_continuation_first_then_text(server, last_fin):
    with RawClient(server.port) as client:
        client.send_raw(encode_frame(CONT, b"fragment1", fin=last_fin) + encode_frame(TEXT, b"fragment2", fin=False)
                        + encode_frame(CONT, b"fragment3"))
        client.expect_fail(1002)


@pytest.mark.parametrize("second", [TEXT, BINARY], ids=["text", "binary"])
def test_new_message_inside_a_fragmented_one_fails(server, second):
    # 5.18: a data frame that is not a continuation while a message is in progress.
    with RawClient(server.port) as client:
        client.send(TEXT, b"fragment1", fin=False)
        client.send(second, b"fragment2")
        client.expect_fail(1002)


@pytest.mark.parametrize("chop", [None, 1], ids=["5.19", "5.20"])
def test_five_fragments_with_pings_between(server, chop):
    with RawClient(server.port) as client:
        fragments = [b"fragment1", b"fragment2", b"fragment3", b"fragment4", b"fragment5"]
        for index, fragment in enumerate(fragments):
            opcode = TEXT if index == 0 else CONT
            client.send(opcode, fragment, fin=index == 4, chop=chop)
            if index in (1, 3):
                client.send(PING, f"pongme {index}".encode(), chop=chop)
                # The pong arrives while the message is still incomplete.
                assert client.frame() == Frame(PONG, f"pongme {index}".encode())
        assert client.message() == (TEXT, b"".join(fragments))
        client.close_cleanly()


def test_empty_fragments(server):
    # 6.1.2, 6.1.3: empty fragments are legal and make an empty or partial message.
    with RawClient(server.port) as client:
        client.send(TEXT, b"", fin=False)
        client.send(CONT, b"", fin=False)
        client.send(CONT, b"")
        assert client.message() == (TEXT, b"")
        client.send(TEXT, b"", fin=False)
        client.send(CONT, b"middle", fin=False)
        client.send(CONT, b"")
        assert client.message() == (TEXT, b"middle")
        client.close_cleanly()


def test_binary_fragments(server):
    data = bytes(range(256)) * 40
    with RawClient(server.port) as client:
        client.send(BINARY, data[:1000], fin=False)
        client.send(PING, b"between")
        client.send(CONT, data[1000:5000], fin=False)
        client.send(CONT, data[5000:])
        assert client.frame() == Frame(PONG, b"between")
        assert client.message() == (BINARY, data)
        client.close_cleanly()
