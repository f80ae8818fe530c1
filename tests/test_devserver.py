"""``python -m wsmiddleware serve``: the development server, with and without hupper's reload.

Each server is a real child process in its own session (process group) serving an
app module written into a temporary directory (its working directory, so the
import also checks that the current directory is on ``sys.path``); the group is
killed at the end whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .support import PYTHON, ROOT, free_port, wait_for_port

APP = '''\
from pathlib import Path

from wsmiddleware import WS, WebSocketMiddleware

PREFIX = {prefix!r}
EXTRA = (Path(__file__).parent / "extra.txt").read_text().strip()


class Echo(WS):
    def on_message(self, websocket, message):
        websocket.write(PREFIX + ":" + message)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("hello " + PREFIX + " " + EXTRA).encode()]


application = WebSocketMiddleware(hello, {{"/ws/echo": Echo()}})


def create_app(prefix="factory"):
    global PREFIX
    PREFIX = prefix
    return application
'''


def write(path: Path, text: str) -> None:
    """Write ``text`` and give the file an mtime later than any it had."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    touch(path, old)


def touch(path: Path, old: int | None = None) -> None:
    old = path.stat().st_mtime_ns if old is None else old
    stamp = max(time.time_ns(), old + 10_000_000)
    os.utime(path, ns=(stamp, stamp))


def until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something true; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
            return response.read().decode()
    except OSError:
        return None


def echo(port: int, text: str = "hi") -> str:
    with connect(f"ws://127.0.0.1:{port}/ws/echo", open_timeout=5) as ws:
        ws.send(text)
        return str(ws.recv(timeout=5))


class DevServer:
    """``python -m wsmiddleware serve ...`` in its own process group, logging into a file."""

    def __init__(self, cwd: Path, *args: str, port: int | None = None) -> None:
        self.cwd = cwd
        self.port = free_port() if port is None else port
        self.log_path = cwd / f"devserver-{self.port}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([PYTHON, "-m", "wsmiddleware", "serve", *args, "--port", str(self.port)],
                                         cwd=str(cwd), env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def edit(self, path: Path, text: str, timeout: float = 10.0) -> None:
        """Write ``text`` into ``path`` and see hupper's monitor notice it.

        Its polling monitor learns a file's mtime at its first look, so an edit made
        just before that goes unnoticed: then the file is saved again, as a user would.
        """
        notice = f"{path.name} changed; reloading"
        seen = self.log().count(notice)
        write(path, text)
        deadline = time.monotonic() + timeout
        next_touch = time.monotonic() + 1.5
        while self.log().count(notice) == seen:
            assert time.monotonic() < deadline, f"no reload for {path} within {timeout} s:\n{self.log()}"
            if time.monotonic() > next_touch:
                touch(path)
                next_touch = time.monotonic() + 1.5
            time.sleep(0.05)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGTERM to the whole group (monitor and worker), SIGKILL to what is left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(8)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "extra.txt").write_text("x1\n")
    (tmp_path / "pkg" / "mod.py").write_text(APP.format(prefix="v1"))
    return tmp_path


@contextlib.contextmanager
def running(cwd: Path, *args: str) -> Iterator[DevServer]:
    server = DevServer(cwd, *args)
    try:
        wait_for_port(server.port, timeout=15, proc=server.proc)
        yield server
    except BaseException:
        print(server.log())
        raise
    finally:
        server.kill()


@pytest.fixture(scope="module")
def reloading(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One reloading server for the reload tests (each brings the source to the state it needs)."""
    root = tmp_path_factory.mktemp("reload")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "extra.txt").write_text("x1\n")
    (root / "pkg" / "mod.py").write_text(APP.format(prefix="v1"))
    with running(root, "pkg.mod:application", "--reload", "--reload-include", "pkg/*.txt") as server:
        until(lambda: get(server.port), what="first answer")
        time.sleep(1.0)  # hupper's monitor has looked at the files twice: the first edit is not missed
        yield server


def test_reload_picks_up_an_edit_and_closes_websockets_with_1001(reloading: DevServer) -> None:
    source = reloading.cwd / "pkg" / "mod.py"
    reloading.edit(source, APP.format(prefix="a1"))
    until(lambda: get(reloading.port) == "hello a1 x1", what="edit a1 served")
    assert echo(reloading.port) == "a1:hi"
    assert "serving pkg.mod:application on http://127.0.0.1:" in reloading.log()

    with connect(f"ws://127.0.0.1:{reloading.port}/ws/echo", open_timeout=5) as ws:
        ws.send("before")
        assert ws.recv(timeout=5) == "a1:before"
        reloading.edit(source, APP.format(prefix="a2"))
        closed: list[ConnectionClosed] = []

        def closed_by_reload() -> bool:
            try:
                ws.recv(timeout=0.5)
            except TimeoutError:
                return False
            except ConnectionClosed as exc:
                closed.append(exc)
            return True

        until(closed_by_reload, what="close at reload")
        assert closed[0].rcvd is not None and closed[0].rcvd.code == 1001
    until(lambda: get(reloading.port) == "hello a2 x1", what="edit a2 served")
    assert echo(reloading.port, "after") == "a2:after"


def test_reload_survives_a_syntax_error(reloading: DevServer) -> None:
    source = reloading.cwd / "pkg" / "mod.py"
    waiting = "Waiting for a file to change"  # hupper, once the worker has failed
    errors_before, waits_before = reloading.log().count("SyntaxError"), reloading.log().count(waiting)
    reloading.edit(source, APP.format(prefix="s1") + "\ndef broken(:\n")
    until(lambda: reloading.log().count("SyntaxError") > errors_before, what="SyntaxError logged")
    until(lambda: reloading.log().count(waiting) > waits_before, what="hupper waiting for a change")
    assert reloading.proc.poll() is None, "the watcher died with the worker"
    assert "def broken(:" in reloading.log()  # the line and its caret, not the import machinery's frames
    reloading.edit(source, APP.format(prefix="s2"))
    until(lambda: get(reloading.port) == "hello s2 x1", what="fixed source served")
    assert echo(reloading.port) == "s2:hi"


def test_reload_include_watches_other_files(reloading: DevServer) -> None:
    source = reloading.cwd / "pkg" / "mod.py"
    reloading.edit(source, APP.format(prefix="i1"))
    until(lambda: (get(reloading.port) or "").startswith("hello i1"), what="i1 served")
    reloading.edit(reloading.cwd / "pkg" / "extra.txt", "x2\n")
    until(lambda: get(reloading.port) == "hello i1 x2", what="included file reloaded")


def test_worker_stops_when_the_reloader_dies(project: Path) -> None:
    with running(project, "pkg.mod:application", "--reload") as server:
        until(lambda: get(server.port), what="first answer")
        children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
        if not children.exists():
            pytest.skip("needs Linux's /proc/PID/task/TID/children")
        worker = int(children.read_text().split()[0])
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(5)

        def worker_gone() -> bool:
            try:
                return Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z"  # a zombie: exited
            except FileNotFoundError:
                return True

        until(worker_gone, timeout=10, what="worker exit")
        assert "the reloader (pid" in server.log()


def test_serves_without_reload_and_stops_gracefully(project: Path) -> None:
    with running(project, "pkg.mod", "--log-level", "warning") as server:  # ATTR omitted: application
        assert until(lambda: get(server.port)) == "hello v1 x1"
        assert echo(server.port) == "v1:hi"
        with connect(f"ws://127.0.0.1:{server.port}/ws/echo", open_timeout=5) as ws:
            os.killpg(server.proc.pid, signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert server.wait() == 0
        assert "access" not in server.log()  # --log-level warning: no request lines


def test_factory_call(project: Path) -> None:
    with running(project, "pkg.mod:create_app('made')") as server:
        assert until(lambda: get(server.port)) == "hello made x1"


@pytest.mark.parametrize("target, reload, message", [
    ("nosuch:application", False, "no module named 'nosuch'"),
    ("pkg.nosuch", True, "no module named 'pkg.nosuch'"),
    ("pkg.mod:nosuch", False, "module 'pkg.mod' has no attribute 'nosuch'"),
    ("pkg.mod:nosuch", True, "module 'pkg.mod' has no attribute 'nosuch'"),
    ("pkg.mod:PREFIX", False, "'pkg.mod:PREFIX' is not a WSGI application: got str"),
    ("pkg mod", False, "bad application path"),
])
def test_bad_import_path_exits_2_with_one_line(project: Path, target: str, reload: bool, message: str) -> None:
    server = DevServer(project, target, *(["--reload"] if reload else []))
    try:
        assert server.wait() == 2, server.log()
        errors = [line for line in server.log().splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and message in errors[0], server.log()
        assert "Traceback" not in server.log()
    finally:
        server.kill()


def test_port_in_use(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = DevServer(project, "pkg.mod:application", port=taken.getsockname()[1])
        try:
            assert server.wait() == 1
            lines = server.log().strip().splitlines()
            assert len(lines) == 1 and "address already in use" in lines[0], server.log()
        finally:
            server.kill()


def test_reload_without_hupper_says_what_to_install(project: Path) -> None:
    code = ("import sys; sys.modules['hupper'] = None\n"
            "from wsmiddleware.__main__ import main\n"
            "sys.exit(main(['serve', 'pkg.mod:application', '--reload']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=str(project), capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "wsmiddleware serve: error: --reload needs hupper: pip install 'wsmiddleware[dev]'"]


def test_import_wsmiddleware_loads_neither_hupper_nor_the_devserver() -> None:
    code = ("import sys, wsmiddleware\n"
            "assert 'hupper' not in sys.modules and 'wsmiddleware.devserver' not in sys.modules, sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


def test_help() -> None:
    result = subprocess.run([sys.executable, "-m", "wsmiddleware", "serve", "--help"], capture_output=True,
                            text=True, timeout=20, check=True)
    for option in ("MODULE[:ATTR]", "--reload", "--reload-include", "--host", "--port", "--log-level"):
        assert option in result.stdout


def test_501_names_the_development_server() -> None:
    from wsmiddleware import transport

    with pytest.raises(transport.TransportUnavailable) as unavailable:
        transport.detect({"SERVER_SOFTWARE": "WSGIServer/0.2"})
    message = str(unavailable.value)
    assert "cannot hand its socket over" in message and "\n" not in message
    assert "python -m wsmiddleware serve module:application --reload" in message


def test_load_application_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsmiddleware.devserver import BadAppPath, find_module_file, load_application

    name = f"wsm_devserver_app_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(
        "def app(environ, start_response): pass\n"
        "class holder:\n    wsgi = app\n"
        "def create_app(tag='x', *, strict=False): return (lambda e, s: None) if strict else app\n"
        "VALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert find_module_file(name) == str(tmp_path / f"{name}.py")
    module = __import__(name)
    assert load_application(name) is module.app  # no 'application': 'app'
    assert load_application(f"{name}:holder.wsgi") is module.app
    assert load_application(f"{name}:create_app()") is module.app
    assert load_application(f"{name}:create_app('y', strict=True)") is not module.app
    for target, message in [(f"{name}:VALUE", "is not a WSGI application: got int"),
                            (f"{name}:holder.nope", "'holder' in module"),
                            (f"{name}:create_app(VALUE)", "factory arguments must be literals"),
                            (f"{name}:1 +", "expected a name or a factory call"),
                            (f"{name}:VALUE()", "is not callable")]:
        with pytest.raises(BadAppPath, match=re.escape(message)):
            load_application(target)
    monkeypatch.delitem(sys.modules, name)
