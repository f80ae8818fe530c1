"""Autobahn 12.x / 13.x: permessage-deflate (RFC 7692) with each negotiation parameter.

The compressed exchanges use the ``websockets`` client's deflate implementation (an
independent peer): if the server broke a negotiated parameter (a larger window, or
context kept across messages when it agreed not to), the client could not inflate
its messages and the echo checks would fail. Raw frames check what the suite checks
byte by byte: RSV1 only on a message's first frame, never on control frames.
"""

import functools
import json
import random
import zlib

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.sync.client import connect

from tests.support import http_request, upgrade_request

from .rawclient import BINARY, CONT, PING, TEXT, RawClient, deflate

SIZES = [16, 64, 256, 1024, 4096, 16384, 65536, 131072]


@functools.cache
def _json_corpus() -> str:
    rng = random.Random(6455)
    return json.dumps([{"id": rng.randrange(10**6), "name": rng.choice(["alpha", "beta", "gamma"]),
                        "tags": rng.sample(["a", "b", "c", "d", "e"], 3), "score": rng.random()}
                       for _ in range(3000)])


def corpus(size: int, seed: int) -> str:
    """Compressible JSON text of ``size`` characters; a different slice for each seed."""
    text = _json_corpus()
    start = (seed * 7919) % (len(text) - 1)
    return ((text[start:] + text) * (size // len(text) + 2))[:size]


def negotiated(ws) -> PerMessageDeflate:
    (extension,) = ws.protocol.extensions
    assert isinstance(extension, PerMessageDeflate)
    return extension


def exchange(ws, sizes=SIZES, count=3, fragment=None):
    for size in sizes:
        for i in range(count):
            text = corpus(size, seed=size * 100 + i)[:size]
            if fragment:
                ws.send([text[j : j + fragment] for j in range(0, len(text), fragment)])
            else:
                ws.send(text)
            assert ws.recv(timeout=10) == text
            data = text.encode()[::-1]
            ws.send(data)
            assert ws.recv(timeout=10) == data


OFFERS = {
    "default": {},
    "server_no_context_takeover": {"server_no_context_takeover": True},
    "client_no_context_takeover": {"client_no_context_takeover": True},
    "both_no_context_takeover": {"server_no_context_takeover": True, "client_no_context_takeover": True},
    **{f"server_max_window_bits={bits}": {"server_max_window_bits": bits} for bits in range(9, 16)},
    **{f"client_max_window_bits={bits}": {"client_max_window_bits": bits} for bits in (9, 12, 15)},
    "no_context_takeover_and_window_9": {"server_no_context_takeover": True, "client_no_context_takeover": True,
                                         "server_max_window_bits": 9, "client_max_window_bits": 9},
}


@pytest.mark.parametrize("params", list(OFFERS.values()), ids=list(OFFERS))
def test_compressed_exchange_with_negotiated_parameters(server, params):
    factory = ClientPerMessageDeflateFactory(**params)
    with connect(f"{server.url}/ws/echo", extensions=[factory], compression=None, max_size=2**21) as ws:
        agreed = negotiated(ws)
        response = ws.response.headers["Sec-WebSocket-Extensions"]
        assert response.startswith("permessage-deflate")
        # What the client asked the server to do, the server agreed to.
        if params.get("server_no_context_takeover"):
            assert agreed.remote_no_context_takeover
        if params.get("client_no_context_takeover"):
            assert agreed.local_no_context_takeover
        if "server_max_window_bits" in params:
            assert agreed.remote_max_window_bits <= params["server_max_window_bits"]
        if "client_max_window_bits" in params:
            assert agreed.local_max_window_bits <= params["client_max_window_bits"]
        exchange(ws)


@pytest.mark.parametrize("fragment", [256, 1024, 4096, 32768])
def test_compressed_fragmented_messages(server, fragment):
    # 12.x.11-18: auto-fragmented compressed messages.
    with connect(f"{server.url}/ws/echo", max_size=2**21) as ws:
        negotiated(ws)
        exchange(ws, sizes=[8192, 65536, 131072], count=2, fragment=fragment)


def test_server_max_window_bits_8_is_declined_not_failed(server):
    # zlib cannot compress with a 256-byte window: the offer is declined and the
    # connection proceeds without compression (Autobahn counts this as unimplemented).
    factory = ClientPerMessageDeflateFactory(server_max_window_bits=8)
    with connect(f"{server.url}/ws/echo", extensions=[factory], compression=None) as ws:
        assert ws.protocol.extensions == []
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("still works")
        assert ws.recv(timeout=5) == "still works"


def test_client_max_window_bits_8_offer_is_accepted(server):
    # The server can inflate whatever window the client uses, 8 included.
    offer = "permessage-deflate; client_max_window_bits=8"
    with RawClient(server.port, headers={"Sec-WebSocket-Extensions": offer}) as client:
        assert "client_max_window_bits=8" in client.headers["sec-websocket-extensions"]
        text = b"abcdefgh" * 100  # back-references within 256 bytes only
        compressor = zlib.compressobj(wbits=-9)
        data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
        client.send(TEXT, data[:-4], rsv=4)
        assert client.message() == (TEXT, text)
        client.close_cleanly()


def test_several_offers_the_first_acceptable_one_wins(server):
    # 13.7: window 8 cannot be served, the second offer is taken.
    offers = ("permessage-deflate; server_no_context_takeover; server_max_window_bits=8, "
              "permessage-deflate; server_no_context_takeover, permessage-deflate")
    status, headers, _ = http_request(server.port, upgrade_request(
        "/ws/echo", server.port, headers={"Sec-WebSocket-Extensions": offers}))
    assert status == 101
    params = [p.strip() for p in headers["sec-websocket-extensions"].split(";")]
    assert params[0] == "permessage-deflate"
    assert "server_no_context_takeover" in params
    assert "server_max_window_bits=8" not in params
    assert "," not in headers["sec-websocket-extensions"]


def test_compression_off_route_negotiates_nothing(server):
    with connect(f"{server.url}/ws/nocompress") as ws:
        assert ws.protocol.extensions == []
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=5) == "plain"


def test_unknown_extension_is_ignored(server):
    status, headers, _ = http_request(server.port, upgrade_request(
        "/ws/echo", server.port, headers={"Sec-WebSocket-Extensions": "x-webkit-made-up; level=3"}))
    assert status == 101
    assert "sec-websocket-extensions" not in headers


DEFLATE = {"Sec-WebSocket-Extensions": "permessage-deflate; client_no_context_takeover"}


def test_raw_compressed_frames_and_server_compression(server):
    with RawClient(server.port, headers=DEFLATE) as client:
        assert "client_no_context_takeover" in client.headers["sec-websocket-extensions"]
        text = corpus(5000, 1).encode()
        client.send(TEXT, deflate(text), rsv=4)
        frame = client.frame()
        # The server compresses its answer too (RSV1 set, smaller than the text).
        assert frame.opcode == TEXT and frame.rsv == 4 and len(frame.payload) < len(text)
        assert zlib.decompressobj(wbits=-15).decompress(frame.payload + b"\x00\x00\xff\xff") == text
        client.close_cleanly()


def test_raw_compressed_message_in_fragments_with_ping_between(server):
    text = corpus(20000, 2).encode()
    compressed = deflate(text)
    third = len(compressed) // 3
    with RawClient(server.port, headers=DEFLATE) as client:
        client.send(TEXT, compressed[:third], fin=False, rsv=4)  # RSV1 on the first frame only
        client.send(PING, b"mid")
        client.send(CONT, compressed[third : 2 * third], fin=False)
        client.send(CONT, compressed[2 * third :])
        assert client.frame().payload == b"mid"
        assert client.message() == (TEXT, text)
        client.close_cleanly()


def test_uncompressed_message_on_a_deflate_connection(server):
    # RSV1 is per message: a message without it is taken as it is.
    with RawClient(server.port, headers=DEFLATE) as client:
        client.send(BINARY, b"not compressed")
        assert client.message() == (BINARY, b"not compressed")
        client.close_cleanly()


def test_rsv1_on_a_continuation_frame_fails(server):
    with RawClient(server.port, headers=DEFLATE) as client:
        client.send(TEXT, deflate(b"abc"), fin=False, rsv=4)
        client.send(CONT, deflate(b"def"), rsv=4)
        client.expect_fail(1002)


def test_rsv1_on_a_control_frame_fails(server):
    with RawClient(server.port, headers=DEFLATE) as client:
        client.send(PING, deflate(b"ping"), rsv=4)
        client.expect_fail(1002)


def test_corrupt_compressed_data_fails(server):
    with RawClient(server.port, headers=DEFLATE) as client:
        client.send(TEXT, b"\xff\xff\xff\xff garbage", rsv=4)
        frame = client.frame()
        assert frame.opcode == 8 and frame.close_code in (1002, 1007)
        client.expect_eof()


def test_compressed_invalid_utf8_fails_with_1007(server):
    with RawClient(server.port, headers=DEFLATE) as client:
        client.send(TEXT, deflate(b"valid then \xed\xa0\x80 surrogate"), rsv=4)
        client.expect_fail(1007)


def test_rsv1_without_negotiation_fails(server):
    with RawClient(server.port, "/ws/nocompress", headers=DEFLATE) as client:
        assert "sec-websocket-extensions" not in client.headers
        client.send(TEXT, deflate(b"abc"), rsv=4)
        client.expect_fail(1002)


def test_context_takeover_across_messages(server):
    # Without client_no_context_takeover the client may reference earlier messages.
    headers = {"Sec-WebSocket-Extensions": "permessage-deflate"}
    compressor = zlib.compressobj(wbits=-15)
    with RawClient(server.port, headers=headers) as client:
        inflater = zlib.decompressobj(wbits=-15)
        for i in range(5):
            text = (corpus(3000, 7) + str(i)).encode()  # mostly the same as the last one
            data = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
            client.send(TEXT, data[:-4], rsv=4)
            frame = client.frame()
            assert frame.rsv == 4
            assert inflater.decompress(frame.payload + b"\x00\x00\xff\xff") == text
            if i:
                assert len(data) < 200  # really relied on the shared context
        client.close_cleanly()
