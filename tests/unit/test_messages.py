"""Unit tests of the message assembler: data frames in, ``str`` / ``bytes`` out (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from wsmiddleware._messages import Assembler, InvalidText

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


def frames(opcode: Opcode, *parts: bytes) -> list[Frame]:
    """The frames of one message: ``opcode`` first, then continuations, the last one final."""
    return [Frame(opcode if i == 0 else CONT, part, fin=i == len(parts) - 1) for i, part in enumerate(parts)]


def feed_all(assembler: Assembler, message: list[Frame]) -> list[str | bytes | None]:
    return [assembler.feed(frame) for frame in message]


# --- single frames -------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"caf\xc3\xa9 \xe2\x82\xac", bytearray(b"caf\xc3\xa9"), memoryview(b"xcaf\xc3\xa9")[1:]])
def test_single_text_frame(data):
    a = Assembler()
    message = a.feed(Frame(TEXT, data))
    assert type(message) is str
    assert message == bytes(data).decode("utf-8")
    assert not a.in_progress


@pytest.mark.parametrize("data", [b"\x00\xff\x80", bytearray(b"\x00\xff\x80"), memoryview(b"-\x00\xff\x80")[1:]])
def test_single_binary_frame(data):
    a = Assembler()
    message = a.feed(Frame(BINARY, data))
    assert type(message) is bytes
    assert message == b"\x00\xff\x80"
    assert not a.in_progress


def test_binary_from_a_mutable_buffer_is_a_copy():
    buffer = bytearray(b"abc")
    a = Assembler()
    message = a.feed(Frame(BINARY, memoryview(buffer)))
    buffer[:] = b"xyz"
    assert message == b"abc"


def test_bytes_data_is_returned_as_is():
    data = b"\x01\x02\x03" * 100
    assert Assembler().feed(Frame(BINARY, data)) is data


def test_empty_messages():
    a = Assembler()
    assert a.feed(Frame(TEXT, b"")) == "" and type(a.feed(Frame(TEXT, b""))) is str
    assert a.feed(Frame(BINARY, b"")) == b"" and type(a.feed(Frame(BINARY, b""))) is bytes
    assert feed_all(a, frames(TEXT, b"", b"", b"")) == [None, None, ""]
    assert feed_all(a, frames(BINARY, b"", b"")) == [None, b""]
    assert not a.in_progress


# --- fragmented messages ---------------------------------------------------------------------


def test_fragmented_text():
    a = Assembler()
    results = feed_all(a, frames(TEXT, b"Hel", b"lo, ", bytearray(b"wor"), memoryview(b"ld!")))
    assert results == [None, None, None, "Hello, world!"]
    assert type(results[-1]) is str
    assert not a.in_progress


def test_fragmented_binary():
    a = Assembler()
    results = feed_all(a, frames(BINARY, b"\x00\x01", bytearray(b"\x02"), memoryview(b"\x03\x04"), b"\xff"))
    assert results == [None, None, None, b"\x00\x01\x02\x03\x04\xff"]
    assert type(results[-1]) is bytes
    assert not a.in_progress


def test_fragments_from_a_reused_buffer_are_copied():
    """Transports hand out views of one shared read buffer: fragments must not keep them."""
    buffer = bytearray(4)
    a = Assembler()
    for i, opcode in enumerate((BINARY, CONT, CONT)):
        buffer[:] = bytes([i]) * 4
        result = a.feed(Frame(opcode, memoryview(buffer), fin=i == 2))
    assert result == b"\x00" * 4 + b"\x01" * 4 + b"\x02" * 4
    for i, opcode in enumerate((TEXT, CONT, CONT)):
        buffer[:] = f"{i}\xe9".encode()[:4].ljust(4, b"-")  # "0é-" then "1é-" then "2é-"
        result = a.feed(Frame(opcode, memoryview(buffer), fin=i == 2))
    assert result == "0é-1é-2é-"


def test_in_progress():
    a = Assembler()
    assert not a.in_progress
    a.feed(Frame(TEXT, b"a", fin=False))
    assert a.in_progress
    a.feed(Frame(CONT, b"b", fin=False))
    assert a.in_progress
    assert a.feed(Frame(CONT, b"c")) == "abc"
    assert not a.in_progress
    a.feed(Frame(BINARY, b"a", fin=False))
    assert a.in_progress
    assert a.feed(Frame(CONT, b"b")) == b"ab"
    assert not a.in_progress


def test_messages_in_a_row_do_not_mix():
    a = Assembler()
    assert feed_all(a, frames(TEXT, b"a", b"b")) == [None, "ab"]
    assert feed_all(a, frames(BINARY, b"c", b"d")) == [None, b"cd"]
    assert feed_all(a, frames(TEXT, b"e", b"f", b"g")) == [None, None, "efg"]
    assert a.feed(Frame(BINARY, b"h")) == b"h"


@pytest.mark.parametrize("cut", range(1, 4))
def test_text_split_inside_a_multibyte_character(cut):
    euro = "€".encode()  # 3 bytes
    a = Assembler()
    assert a.feed(Frame(TEXT, b"x" + euro[:cut], fin=False)) is None
    assert a.feed(Frame(CONT, euro[cut:] + b"y")) == "x€y"


def test_four_byte_character_one_byte_per_fragment():
    data = "\U0001f600".encode()  # 4 bytes
    a = Assembler()
    assert feed_all(a, frames(TEXT, *[data[i:i + 1] for i in range(4)])) == [None, None, None, "\U0001f600"]


def test_character_split_across_an_empty_fragment():
    a = Assembler()
    assert feed_all(a, frames(TEXT, b"\xc3", b"", b"\xa9")) == [None, None, "é"]


# --- invalid UTF-8 -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"\xff", b"abc\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80",
    bytearray(b"ok\xfe"), memoryview(b"\xe2\x28\xa1"),
])
def test_invalid_utf8_in_a_single_frame(data):
    a = Assembler()
    with pytest.raises(InvalidText):
        a.feed(Frame(TEXT, data))
    assert not a.in_progress
    assert a.feed(Frame(TEXT, b"ok")) == "ok"


def test_invalid_text_is_a_value_error():
    assert issubclass(InvalidText, ValueError)


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0", b"\xe2\x28", b"\xf4\x90", b"\xe0\x80", b"\x80"])
def test_invalid_utf8_in_the_first_fragment_fails_at_once(bad):
    a = Assembler()
    with pytest.raises(InvalidText):
        a.feed(Frame(TEXT, b"abc" + bad, fin=False))
    assert not a.in_progress


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0", b"\xe2\x28", b"\xf4\x90", b"\xe0\x80", b"\x80", b"\xc3\xa9\xfe"])
def test_invalid_utf8_in_a_middle_fragment_fails_at_that_fragment(bad):
    a = Assembler()
    assert a.feed(Frame(TEXT, b"abc", fin=False)) is None
    assert a.feed(Frame(CONT, b"def", fin=False)) is None
    with pytest.raises(InvalidText):
        a.feed(Frame(CONT, bad, fin=False))
    assert not a.in_progress
    # What the peer sends after that (the rest of the failed message) is ignored.
    assert a.feed(Frame(CONT, b"ghi", fin=False)) is None
    assert a.feed(Frame(CONT, b"jkl")) is None
    assert a.feed(Frame(TEXT, b"next")) == "next"


def test_invalid_continuation_across_fragments_fails_at_the_fragment_making_it_invalid():
    a = Assembler()
    assert a.feed(Frame(TEXT, b"abc\xe2", fin=False)) is None  # a valid start of "€"
    with pytest.raises(InvalidText):
        a.feed(Frame(CONT, b"\x28", fin=False))  # but this is no continuation byte


def test_surrogate_prefix_ending_a_fragment_fails_at_that_fragment():
    """ED A0..BF can only start an (invalid) UTF-16 surrogate: no valid text starts so.

    CPython's incremental decoder waits for a third byte there (for the
    "surrogatepass" error handler), so this checks the "as soon as it arrives"
    promise of the module on the only prefixes where it does not hold for free.
    """
    accepted = []
    for second in range(0xA0, 0xC0):
        try:
            Assembler().feed(Frame(TEXT, b"abc\xed" + bytes([second]), fin=False))
        except InvalidText:
            continue
        accepted.append(f"ED {second:02X}")
    assert accepted == []


def test_surrogate_split_across_fragments_fails_before_the_message_ends():
    a = Assembler()
    assert a.feed(Frame(TEXT, b"abc\xed", fin=False)) is None  # ED 80..9F would be valid
    with pytest.raises(InvalidText):
        a.feed(Frame(CONT, b"\xa0\x80", fin=False))
    assert not a.in_progress


def test_truncated_character_at_the_end_of_a_message():
    a = Assembler()
    assert a.feed(Frame(TEXT, b"abc", fin=False)) is None
    with pytest.raises(InvalidText):
        a.feed(Frame(CONT, b"\xe2\x82"))  # fin, but "€" lacks its last byte
    assert not a.in_progress


def test_truncated_character_before_an_empty_final_fragment():
    a = Assembler()
    assert a.feed(Frame(TEXT, b"abc\xc3", fin=False)) is None
    with pytest.raises(InvalidText):
        a.feed(Frame(CONT, b""))


def test_invalid_binary_is_fine():
    a = Assembler()
    assert feed_all(a, frames(BINARY, b"\xff", b"\xc0")) == [None, b"\xff\xc0"]


# --- reset and stray frames ---------------------------------------------------------------------


def test_reset_mid_text_message():
    a = Assembler()
    a.feed(Frame(TEXT, b"abc\xe2\x82", fin=False))  # ends inside "€"
    a.reset()
    assert not a.in_progress
    assert a.feed(Frame(CONT, b"\xac")) is None  # the rest of the forgotten message: ignored
    # A new message starts afresh: no bytes of the old decoder state leak into it.
    assert feed_all(a, frames(TEXT, b"x", b"y")) == [None, "xy"]


def test_reset_mid_binary_message():
    a = Assembler()
    a.feed(Frame(BINARY, b"old", fin=False))
    a.reset()
    assert not a.in_progress
    assert feed_all(a, frames(BINARY, b"ne", b"w")) == [None, b"new"]


def test_reset_when_idle():
    a = Assembler()
    a.reset()
    assert not a.in_progress
    assert a.feed(Frame(TEXT, b"ok")) == "ok"


@pytest.mark.parametrize("fin", [True, False])
def test_stray_continuation_is_ignored(fin):
    a = Assembler()
    assert a.feed(Frame(CONT, b"\xff\xfe", fin=fin)) is None  # not even decoded
    assert not a.in_progress
    assert a.feed(Frame(TEXT, b"ok")) == "ok"


def test_continuation_after_a_complete_message_is_ignored():
    a = Assembler()
    assert feed_all(a, frames(TEXT, b"a", b"b")) == [None, "ab"]
    assert a.feed(Frame(CONT, b"c")) is None
    assert a.feed(Frame(CONT, b"d", fin=False)) is None
    assert not a.in_progress


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frames_are_not_messages(opcode):
    a = Assembler()
    assert a.feed(Frame(opcode, b"")) is None
    a.feed(Frame(TEXT, b"ab", fin=False))
    assert a.feed(Frame(opcode, b"\x03\xe8" if opcode is Opcode.CLOSE else b"x")) is None
    assert a.in_progress  # a control frame in between does not disturb the message
    assert a.feed(Frame(CONT, b"c")) == "abc"


# --- property: any split reassembles ----------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the positions ``cuts`` name (modulo its length + 1): empty parts included."""
    bounds = [0, *sorted({cut % (len(data) + 1) for cut in cuts}), len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


@given(st.text(), st.lists(st.integers(min_value=0), max_size=12), st.booleans())
def test_text_split_anywhere_reassembles(text, cuts, views):
    data = text.encode("utf-8")
    parts = split(data, cuts)
    if views:
        parts = [memoryview(bytearray(part)) for part in parts]
    a = Assembler()
    results = feed_all(a, frames(TEXT, *parts))
    assert results[:-1] == [None] * (len(parts) - 1)
    assert type(results[-1]) is str
    assert results[-1] == text
    assert not a.in_progress


@given(st.binary(), st.lists(st.integers(min_value=0), max_size=12))
def test_binary_split_anywhere_reassembles(data, cuts):
    parts = split(data, cuts)
    results = feed_all(Assembler(), frames(BINARY, *parts))
    assert type(results[-1]) is bytes
    assert results[-1] == data
