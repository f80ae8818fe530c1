"""permessage-deflate: on by default, off per route, and bounded by max_message_size.

The limit applies to the decompressed size: a small frame that inflates to
100 MiB (a decompression bomb) is refused with 1009 once 1 MiB has come out,
without the server ever holding the whole thing.
"""

import functools
import zlib

import pytest
from websockets.sync.client import connect

from tests.conformance.rawclient import BINARY, CONT, TEXT, RawClient, deflate
from tests.robust_apps import server_counts, start

DEFLATE = {"Sec-WebSocket-Extensions": "permessage-deflate"}
MiB = 2**20


@pytest.fixture(scope="module", params=["pywsgi", "gunicorn"])
def default_server(request):
    server = start(request.param, "application")
    yield server
    server.stop()


@functools.cache
def zeros_compressed(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\0" * MiB
    out = [compressor.compress(chunk) for _ in range(size // MiB)]
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    data = b"".join(out)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def test_deflate_is_negotiated_by_default(default_server):
    with connect(f"{default_server.url}/ws/echo") as ws:
        assert [type(e).__name__ for e in ws.protocol.extensions] == ["PerMessageDeflate"]
        text = "compress me " * 1000
        ws.send(text)
        assert ws.recv(timeout=5) == text


def test_compression_none_turns_it_off(default_server):
    with connect(f"{default_server.url}/ws/nocompress") as ws:
        assert ws.protocol.extensions == []
        ws.send("plain")
        assert ws.recv(timeout=5) == "plain"


def test_decompression_bomb_is_stopped_at_the_limit(default_server):
    bomb = zeros_compressed(100 * MiB)
    assert len(bomb) < MiB // 4  # well under the limit on the wire
    before = server_counts(default_server)
    with RawClient(default_server.port, headers=DEFLATE) as client:
        client.send(BINARY, bomb, rsv=4)
        client.expect_fail(1009)
    after = server_counts(default_server)
    assert after["pid"] == before["pid"]
    # The server never held the 100 MiB: its peak memory barely moved.
    assert after["peak_rss"] - before["peak_rss"] < 32 * MiB, (before, after)
    # And it still serves.
    with RawClient(default_server.port, headers=DEFLATE) as client:
        client.send(TEXT, deflate(b"after the bomb"), rsv=4)
        assert client.message() == (TEXT, b"after the bomb")
        client.close_cleanly()


def test_bomb_spread_over_fragments_is_stopped(default_server):
    bomb = zeros_compressed(16 * MiB)
    size = len(bomb) // 8 + 1
    pieces = [bomb[i : i + size] for i in range(0, len(bomb), size)]
    with RawClient(default_server.port, headers=DEFLATE) as client:
        client.send(TEXT, pieces[0], fin=False, rsv=4)
        for piece in pieces[1:-1]:
            client.send(CONT, piece, fin=False)
        # The limit is crossed before the last fragment: the server does not wait for it.
        client.expect_fail(1009)


def test_many_small_compressed_messages_under_the_limit_are_fine(default_server):
    # The limit is per message: a stream of 512 KiB messages (inflated) is normal traffic.
    message = b"\0" * (MiB // 2)
    compressed = deflate(message)
    with RawClient(default_server.port, headers={"Sec-WebSocket-Extensions":
                                                 "permessage-deflate; client_no_context_takeover"}) as client:
        for _ in range(20):
            client.send(BINARY, compressed, rsv=4)
            assert client.message() == (BINARY, message)
        client.close_cleanly()


def test_exactly_the_limit_after_decompression_is_accepted(default_server):
    message = bytes(range(256)) * (MiB // 256)
    assert len(message) == MiB
    with RawClient(default_server.port, headers=DEFLATE, timeout=15) as client:
        client.send(BINARY, deflate(message), rsv=4)
        assert client.message() == (BINARY, message)
        client.send(BINARY, deflate(message + b"!"), rsv=4)
        client.expect_fail(1009)
