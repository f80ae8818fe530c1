"""A real ``redis-server`` on a free loopback port, for the pub/sub tests.

Registered as a pytest plugin by ``tests/conftest.py``. The server keeps nothing
on disk (``--save "" --appendonly no``) and is stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .support import free_port, wait_for_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisServer:
    """One redis-server child process; ``kill`` and ``start`` keep the same port."""

    def __init__(self, port: int | None = None, *, persistent: bool = False) -> None:
        #: persistent: an append-only file synced at every write, so that even a
        #: SIGKILL loses nothing (the streams of channel history survive a restart).
        self.persistent = persistent
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="wsm-redis-"))
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
            "--dir", str(self.dir), "--protected-mode", "no", "--loglevel", "warning",
        ]
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                wait_for_port(self.port, timeout=0.5, proc=self.proc)
                if self.cli("PING") == "PONG":
                    return
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}: {self.log()}")

    def log(self) -> str:
        return (self.dir / "redis.log").read_text(errors="replace")

    def kill(self) -> None:
        """Simulate a crash: SIGKILL, so connections drop without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args: str | bytes, timeout: float = 5.0) -> str:
        """Run ``redis-cli`` against this server (an independent Redis client)."""
        argv = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), *[os.fsdecode(a) if isinstance(a, bytes) else a for a in args]]
        result = subprocess.run(argv, capture_output=True, timeout=timeout)
        return result.stdout.decode(errors="replace").strip()

    def publish_raw(self, channel: str, payload: bytes, timeout: float = 5.0) -> int:
        """``PUBLISH`` arbitrary bytes with redis-cli (``-x`` reads the value from stdin)."""
        argv = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), "-x", "PUBLISH", channel]
        result = subprocess.run(argv, input=payload, capture_output=True, timeout=timeout)
        return int(result.stdout.strip() or b"-1")

    def pubsub_clients(self) -> list[dict[str, str]]:
        """``CLIENT LIST TYPE pubsub`` as a list of field dicts."""
        lines = self.cli("CLIENT", "LIST", "TYPE", "pubsub").splitlines()
        return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in lines if line]


@pytest.fixture(scope="session")
def redis_server():
    """A redis-server shared by the tests that do not stop it."""
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def fresh_redis():
    """A redis-server of the test's own, which it may kill and restart."""
    server = RedisServer()
    yield server
    server.close()
