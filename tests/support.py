"""Helpers shared by the tests: free ports, server processes, a raw-frame client."""

from __future__ import annotations

import base64
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class ServerProcess:
    """A server started as a child process on a free loopback port; stopped by pid."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str] | None = None, name: str = "server"):
        self.argv = argv
        self.port = port
        self.name = name
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"wsm-{name}-{port}.log"
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=str(ROOT), env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc=self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"{name} did not start:\n{self.log()}") from None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def start_server(kind: str, app: str = "tests.apps:application", env: dict[str, str] | None = None,
                 workers: int = 1, extra: list[str] | None = None) -> ServerProcess:
    """Start ``app`` under one of the supported servers (or an unsupported one)."""
    port = free_port()
    extra = list(extra or [])
    if kind in ("pywsgi", "geventwebsocket", "wsgiref"):
        argv = [PYTHON, "-m", "tests.serve", kind, app, str(port)]
    else:
        worker = {
            "gunicorn": "gevent",
            "gunicorn-pywsgi": "gevent_pywsgi",
            "gunicorn-gws": "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
            "gunicorn-sync": "sync",
        }[kind]
        argv = [str(BIN / "gunicorn"), "-k", worker, "-w", str(workers), "-b", f"127.0.0.1:{port}",
                "--graceful-timeout", "5", "--log-level", "info", *extra, app]
    return ServerProcess(argv, port, env=env, name=kind)


# -- raw sockets ---------------------------------------------------------------


def http_request(port: int, raw: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; return (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return read_http_response(sock)


def read_http_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status != 101:
        length = int(headers.get("content-length", "-1"))
        while length >= 0 and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, headers, body


def upgrade_request(path: str = "/ws/echo", port: int = 0, *, method: str = "GET", version: str = "HTTP/1.1",
                    key: str | None = None, headers: dict[str, str] | None = None, omit: tuple[str, ...] = ()) -> bytes:
    values = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key if key is not None else base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    values.update(headers or {})
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in values.items() if k not in omit]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class RawWebSocket:
    """A deliberately minimal client that sends arbitrary (even invalid) frames."""

    def __init__(self, port: int, path: str = "/ws/echo", headers: dict[str, str] | None = None, timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.sendall(upgrade_request(path, port, headers=headers))
        self.status, self.headers, rest = read_http_response(self.sock)
        self.buffer = rest
        if self.status != 101:
            raise ConnectionError(f"handshake answered {self.status}")

    def send_frame(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True,
                   length: int | None = None, chop: int | None = None) -> None:
        head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
        n = len(payload) if length is None else length
        mask_bit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mask_bit | n])
        elif n < 65536:
            head += bytes([mask_bit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            head += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if len(payload) < 4096 else _mask(payload, key)
        data = head + payload
        if chop:
            for i in range(0, len(data), chop):
                self.sock.sendall(data[i : i + chop])
        else:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes, bool]:
        """The next frame from the server: (opcode, payload, fin)."""
        b1, b2 = self._read_exact(2)
        n = b2 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exact(8))
        if b2 & 0x80:
            raise AssertionError("server frames must not be masked")
        return b1 & 0x0F, self._read_exact(n), bool(b1 & 0x80)

    def recv_close(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Skip frames until a close frame; return its (code, reason)."""
        self.sock.settimeout(timeout)
        while True:
            opcode, payload, _ = self.recv_frame()
            if opcode == 8:
                if len(payload) >= 2:
                    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
                return None, ""

    def expect_eof(self, timeout: float = 5.0) -> bool:
        """True if the server closes the TCP connection within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


class Inbox:
    """A callable pub/sub subscriber that remembers what it got."""

    def __init__(self) -> None:
        self.got: list[tuple[str, object]] = []

    def __call__(self, channel, message) -> None:
        self.got.append((channel, message))

    def messages(self) -> list:
        return [message for _, message in self.got]


# -- server logs -------------------------------------------------------------------

#: gevent's hub ends each error it prints with its own time stamp (gevent._util.gmctime),
#: then "<context> failed with <ExceptionName>" (context: a greenlet, a callback, the hub).
_HUB_STAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ(?: |$)"
_TRACEBACK = "Traceback (most recent call last)"


def hub_errors(log: str) -> list[str]:
    """The lines of ``log`` that show gevent's hub printing an error.

    That is every " failed with " line, and every "Traceback (most recent call
    last)" block that the hub printed: one followed by the hub's time stamp line
    (gevent writes the traceback, then ``<time> <context> failed with <Error>``).
    Tracebacks that ``logging`` writes for an exception it logs (a callback that
    raised: close 1011) are not the hub's and are not returned.
    """
    import re

    hub_stamp = re.compile(_HUB_STAMP)
    found: list[str] = []
    block: list[str] = []  # the traceback being read, if any
    after_exception = False  # its exception line has been read
    for line in log.splitlines():
        stamp = bool(hub_stamp.match(line)) or " failed with " in line
        if stamp:
            found.extend(block)
            found.append(line)
            block, after_exception = [], False
            continue
        if _TRACEBACK in line:
            chained = bool(block) and after_exception
            block = block + [line] if chained else [line]
            after_exception = False
            continue
        if not block:
            continue
        if not line.strip() or line.startswith("During handling") or line.startswith("The above exception"):
            block.append(line)  # between chained tracebacks, or before the hub's line
        elif line[:1].isspace() and not after_exception:
            block.append(line)  # a frame
        elif not after_exception:
            block.append(line)  # the exception line
            after_exception = True
        else:
            block, after_exception = [], False  # something else: not the hub's
    return found


def on_two_workers(clients: dict, add: Callable[[], None], errors: list, per_worker: int) -> dict:
    """Call ``add`` (which files a new client under its worker's pid in ``clients``,
    or appends its exception to ``errors``) until each of two workers has
    ``per_worker`` clients (bounded). A worker that has enough is paused (SIGSTOP)
    while the next client connects, so that the other worker accepts it."""
    for _ in range(4 * per_worker):
        if len(clients) == 2 and all(len(group) >= per_worker for group in clients.values()):
            return clients
        full = [pid for pid, group in clients.items() if len(group) >= per_worker]
        for pid in full:
            os.kill(pid, signal.SIGSTOP)
        try:
            connecting = threading.Thread(target=add)
            connecting.start()
            connecting.join(10)
        finally:
            for pid in full:
                os.kill(pid, signal.SIGCONT)
        connecting.join(10)
        assert not errors, errors
    raise AssertionError(f"could not reach two workers: { {pid: len(g) for pid, g in clients.items()} }")
