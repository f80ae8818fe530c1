"""examples/echo.py as README shows it: a page, an echo endpoint, a graceful stop."""

import signal
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .support import PYTHON, ROOT, ServerProcess, free_port


@pytest.fixture()
def echo_example():
    port = free_port()
    server = ServerProcess([PYTHON, str(ROOT / "examples" / "echo.py"), "--host", "127.0.0.1", "--port", str(port)],
                           port, name="example-echo")
    yield server
    server.stop()


def test_echo_example_serves_page_and_echoes(echo_example):
    with urllib.request.urlopen(f"{echo_example.http}/", timeout=5) as response:
        page = response.read()
    assert response.headers["Content-Type"].startswith("text/html")
    assert b'new WebSocket' in page and b"/ws/echo" in page
    with connect(f"{echo_example.url}/ws/echo", origin=f"http://127.0.0.1:{echo_example.port}") as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x01\x02")
        assert ws.recv(timeout=5) == b"\x01\x02"


def test_echo_example_stops_with_1001_on_sigterm(echo_example):
    with connect(f"{echo_example.url}/ws/echo") as ws:
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
        echo_example.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1001
    assert echo_example.proc.wait(15) == 0
