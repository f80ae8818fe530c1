"""A raw-frame WebSocket client for the conformance suite.

It builds frames byte by byte (valid or not), sends them whole or chopped into tiny
writes, and reads the server's frames without interpreting them, so that each test
can check exactly what went over the wire: which frames, in which order, which close
code, and whether the server then dropped the TCP connection.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass

from tests.support import read_http_response, upgrade_request

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Seconds a test waits for something that must happen.
WAIT = 5.0


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        assert self.opcode == CLOSE, self
        return self.payload[2:]


def mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True,
                 length: int | None = None) -> bytes:
    """One frame as a client sends it; ``length`` may lie about the payload's size."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if masked:
        key = os.urandom(4)
        return head + key + mask(payload, key)
    return head + payload


def close_payload(code: int | None = None, reason: bytes | str = b"") -> bytes:
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def deflate(data: bytes, wbits: int = 15) -> bytes:
    """permessage-deflate's encoding of one message (RFC 7692 section 7.2.1)."""
    compressor = zlib.compressobj(wbits=-wbits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class RawClient:
    """One upgraded connection; every read is bounded by ``timeout``."""

    def __init__(self, port: int, path: str = "/ws/echo", *, headers: dict[str, str] | None = None,
                 timeout: float = WAIT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        # Chopped writes must leave as separate segments for the server to see them apart.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.sock.sendall(upgrade_request(path, port, headers=headers))
        self.status, self.headers, self.buffer = read_http_response(self.sock)
        if self.status != 101:
            self.sock.close()
            raise ConnectionError(f"handshake answered {self.status}")
        self.eof = False
        self.write_failed = False
        self.inflater: zlib._Decompress | None = None

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def close(self) -> None:
        """Close the socket without any closing handshake."""
        self.sock.close()

    def abort(self) -> None:
        """Reset the TCP connection (RST), as a crashed peer or a dropped route does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    # -- sending ---------------------------------------------------------------

    def send(self, opcode: int, payload: bytes | str = b"", *, fin: bool = True, rsv: int = 0,
             chop: int | None = None, delay: float = 0.0) -> None:
        """Send one frame, optionally in writes of ``chop`` bytes ``delay`` seconds apart."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self.send_raw(encode_frame(opcode, payload, fin=fin, rsv=rsv), chop=chop, delay=delay)

    def send_raw(self, data: bytes, *, chop: int | None = None, delay: float = 0.0) -> None:
        """Write bytes; once the server has dropped the connection, the rest is discarded.

        A server that fails the connection early (on the first bad byte) may close
        it while we are still writing: what matters is what it sent back.
        """
        try:
            if not chop:
                self.sock.sendall(data)
                return
            for i in range(0, len(data), chop):
                self.sock.sendall(data[i : i + chop])
                if delay:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            self.write_failed = True

    def send_close(self, code: int | None = 1000, reason: bytes | str = b"", **kwargs: object) -> None:
        self.send(CLOSE, close_payload(code, reason), **kwargs)  # type: ignore[arg-type]

    # -- receiving ------------------------------------------------------------

    def _fill(self, n: int, deadline: float) -> bool:
        while len(self.buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"waited {self.timeout} s for {n} bytes, have {len(self.buffer)}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
                return False
            self.buffer += chunk
        return True

    def recv_frame(self, timeout: float | None = None) -> Frame | None:
        """The server's next frame, or ``None`` if it closed the TCP connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if not self._fill(2, deadline):
            assert not self.buffer, f"connection closed inside a frame head: {self.buffer!r}"
            return None
        b1, b2 = self.buffer[0], self.buffer[1]
        assert not b2 & 0x80, "a server must not mask its frames"
        n, offset = b2 & 0x7F, 2
        if n == 126:
            assert self._fill(4, deadline), "connection closed inside a frame head"
            n, offset = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif n == 127:
            assert self._fill(10, deadline), "connection closed inside a frame head"
            n, offset = struct.unpack("!Q", self.buffer[2:10])[0], 10
        assert self._fill(offset + n, deadline), "connection closed inside a frame"
        payload = self.buffer[offset : offset + n]
        self.buffer = self.buffer[offset + n :]
        return Frame(b1 & 0x0F, payload, bool(b1 & 0x80), (b1 >> 4) & 0x7)

    def frame(self, timeout: float | None = None) -> Frame:
        frame = self.recv_frame(timeout)
        assert frame is not None, "the server closed the TCP connection"
        return frame

    def message(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next data message, reassembled from its frames: (opcode, payload)."""
        first = self.frame(timeout)
        assert first.opcode in (TEXT, BINARY), f"expected a data frame, got {first}"
        parts = [first.payload]
        frame = first
        while not frame.fin:
            frame = self.frame(timeout)
            assert frame.opcode == CONT, f"expected a continuation frame, got {frame}"
            parts.append(frame.payload)
        payload = b"".join(parts)
        if first.rsv & 0x4:
            # One decompressor for the connection: the server may keep its context.
            if self.inflater is None:
                self.inflater = zlib.decompressobj(wbits=-15)
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        return first.opcode, payload

    def expect_eof(self, timeout: float | None = None) -> None:
        """The server drops the TCP connection and sends nothing more."""
        frame = self.recv_frame(timeout)
        assert frame is None, f"expected the server to close the TCP connection, got {frame}"

    def expect_close(self, code: int | None, timeout: float | None = None) -> Frame:
        """The next frame is a close with ``code``; then the server drops TCP."""
        frame = self.frame(timeout)
        assert frame.opcode == CLOSE, f"expected a close frame with {code}, got {frame}"
        assert frame.close_code == code, f"expected close code {code}, got {frame.close_code} {frame.close_reason!r}"
        if frame.close_reason:
            frame.close_reason.decode("utf-8")  # a server's reason must be valid UTF-8
        assert len(frame.payload) <= 125
        self.expect_eof(timeout)
        return frame

    def expect_fail(self, code: int, timeout: float | None = None) -> Frame:
        """The server fails the connection: close ``code`` comes first, nothing else."""
        return self.expect_close(code, timeout)

    def expect_silence(self, within: float = 0.3) -> None:
        """Nothing arrives for ``within`` seconds (e.g. no answer to an unsolicited pong)."""
        try:
            frame = self.recv_frame(within)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {frame}")

    def close_cleanly(self, code: int = 1000, reason: bytes | str = b"") -> None:
        """Run the closing handshake: our close, its echo, then the server drops TCP."""
        self.send_close(code, reason)
        self.expect_close(code)

    def echo(self, opcode: int, payload: bytes) -> None:
        """Send one message and check that it comes back unchanged."""
        self.send(opcode, payload)
        assert self.message() == (opcode, payload)
