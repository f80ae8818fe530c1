"""Development server behind ``python -m wsmiddleware serve module:application [--reload]``.

Serves any WSGI application (wrapped in :class:`~wsmiddleware.WebSocketMiddleware`
or not) on :class:`wsmiddleware.server.WSGIServer`, with gevent's monkey-patching
done before the application's module is imported, the way ``python -m
gevent.monkey`` and gunicorn's gevent worker do it.

With ``--reload``, `hupper <https://docs.pylonsproject.org/projects/hupper/>`_
(the ``dev`` extra) runs the server in a worker process and starts a new one
when a file of an imported module (or of a ``--reload-include`` glob) changes:

* the monitor process binds the listening socket once and every worker inherits
  it, so a connection made during a restart waits in the backlog instead of
  being refused, and a port in use is reported once, at start;
* a worker stopped for a reload closes its WebSockets with 1001 ("going away"):
  hupper sends it SIGTERM, which runs the server's graceful ``stop()``;
* a worker that cannot load the application (a syntax error, an exception at
  import) logs why and exits; hupper waits for the next change and tries again.
  A bad import path (no such module, no such attribute) in code not edited
  since the start is a mistake in the command: the monitor exits with 2.

Not for production: use ``gunicorn -k gevent`` there.
"""

from __future__ import annotations

import ast
import dataclasses
import errno
import importlib
import importlib.machinery
import importlib.util
import logging
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any, NoReturn

__all__ = ["run_worker", "run_reloader", "load_application", "find_module_file", "split_target", "bind",
           "BadAppPath", "Config", "HUPPER_MISSING"]

logger = logging.getLogger("wsmiddleware.devserver")

#: Attributes looked up, in order, when ``module:ATTR`` omits ``ATTR``.
DEFAULT_ATTRS = ("application", "app")
#: How often (s) hupper looks for changed files; also the least time between two restarts.
RELOAD_INTERVAL = 0.5
#: How long (s) a stopping worker has for its 1001 closing handshakes before hupper kills it.
SHUTDOWN_INTERVAL = 3.0
#: How long (s) plain HTTP requests still running at stop may take before they are killed.
STOP_TIMEOUT = 1.0
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
HUPPER_MISSING = "--reload needs hupper: pip install 'wsmiddleware[dev]'"


class BadAppPath(Exception):
    """``module:attr`` names no WSGI application; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Config:
    """What a worker needs to serve; picklable, for hupper's worker process."""

    target: str
    host: str
    port: int
    fd: int | None = None
    reload: bool = False
    reload_include: tuple[str, ...] = ()
    log_level: str = "info"
    module_file: str | None = None
    cwd: str = dataclasses.field(default_factory=os.getcwd)
    started: float = dataclasses.field(default_factory=time.time)


# -- finding and loading the application ---------------------------------------------------


def split_target(target: str) -> tuple[str, str | None]:
    """``"pkg.mod:attr"`` -> ``("pkg.mod", "attr")``; ``"pkg.mod"`` -> ``("pkg.mod", None)``."""
    module, sep, attr = target.partition(":")
    module, attr = module.strip(), attr.strip()
    if not module or not all(part.isidentifier() for part in module.split(".")) or (sep and not attr):
        raise BadAppPath(f"bad application path {target!r}: expected MODULE:ATTR, e.g. app:application")
    return module, attr or None


def find_module_file(module: str) -> str | None:
    """The source file of ``module``, found without importing (running) anything.

    Raises :class:`BadAppPath` when the module surely does not exist; returns
    ``None`` when it may exist without a file of its own (a namespace package, an
    import hook): the import will tell.
    """
    parts = module.split(".")
    try:  # a top-level name: every finder (editable installs have their own), nothing executed
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if spec is None:
            where = f"package {name.rpartition('.')[0]!r}" if depth > 1 else "the current directory and sys.path"
            raise BadAppPath(f"cannot import {module!r}: no module named {name!r} in {where}")
        if depth == len(parts):
            break
        if not spec.submodule_search_locations:
            return None  # not a package on the file system: let the import decide
        try:
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:depth + 1]),
                                                            list(spec.submodule_search_locations))
        except Exception:  # nested namespace packages want their parent imported
            return None
    if spec is not None and spec.has_location and spec.origin and os.path.isfile(spec.origin):
        return spec.origin
    return None


def _resolve(module: Any, node: ast.expr, text: str) -> Any:
    if isinstance(node, ast.Name):
        owner, name, where = module, node.id, f"module {module.__name__!r}"
    elif isinstance(node, ast.Attribute):
        owner, name = _resolve(module, node.value, text), node.attr
        where = f"{ast.unparse(node.value)!r} in module {module.__name__!r}"
    else:
        raise BadAppPath(f"bad application path {text!r}: expected a name or a factory call like create_app()")
    try:
        return getattr(owner, name)
    except AttributeError:
        raise BadAppPath(f"{where} has no attribute {name!r}") from None


def _lookup(module: Any, attr: str | None) -> Any:
    if attr is None:
        for name in DEFAULT_ATTRS:
            if hasattr(module, name):
                return getattr(module, name)
        raise BadAppPath(f"module {module.__name__!r} has no attribute 'application' or 'app'; "
                         f"name it: {module.__name__}:ATTR")
    try:
        node = ast.parse(attr, mode="eval").body
    except SyntaxError:
        node = None
    if not isinstance(node, ast.Call):
        return _resolve(module, node or ast.Constant(attr), attr)
    factory = _resolve(module, node.func, attr)
    try:
        if any(kw.arg is None for kw in node.keywords):
            raise ValueError("**")
        args = [ast.literal_eval(arg) for arg in node.args]
        kwargs = {str(kw.arg): ast.literal_eval(kw.value) for kw in node.keywords}
    except ValueError:
        raise BadAppPath(f"bad application path {attr!r}: factory arguments must be literals") from None
    if not callable(factory):
        raise BadAppPath(f"{ast.unparse(node.func)!r} in module {module.__name__!r} is not callable")
    return factory(*args, **kwargs)


def load_application(target: str) -> Any:
    """Import ``module:attr`` and return the WSGI application it names.

    ``attr`` may be omitted (``application``, then ``app``), dotted (``obj.wsgi``)
    or a factory call with literal arguments (``create_app()``,
    ``create_app("dev")``). A wrong path raises :class:`BadAppPath`; an error in
    the module's own code propagates unchanged.
    """
    module_name, attr = split_target(target)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise BadAppPath(f"cannot import {module_name!r}: no module named {exc.name!r}") from None
        raise
    application = _lookup(module, attr)
    if not callable(application):
        raise BadAppPath(f"{target!r} is not a WSGI application: got {type(application).__name__}")
    return application


# -- the listening socket --------------------------------------------------------------------


def bind(host: str, port: int, backlog: int = 256) -> socket.socket:
    """A listening (standard library) socket on ``host:port``; ``OSError`` with a clear message."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0,
                                                             socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}:{port}: unknown host ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        hints = {errno.EADDRINUSE: "address already in use (another server there? pick one with --port)",
                 errno.EACCES: "permission denied (ports below 1024 need privileges)",
                 errno.EADDRNOTAVAIL: "no such address on this machine"}
        hint = hints.get(exc.errno or 0, exc.strerror or str(exc))
        raise OSError(f"cannot listen on {host}:{port}: {hint}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port/`` of a listening socket (IPv6 addresses in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


# -- the worker: patch, import, serve --------------------------------------------------------


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    logging.getLogger("wsmiddleware").setLevel(level.upper())


def _edited_since(path: str | None, started: float) -> bool:
    try:
        return path is not None and os.stat(path).st_mtime > started
    except OSError:
        return True  # gone since the start: being edited


def _give_up(reloader: Any, code: int) -> NoReturn:
    """Exit with ``code``, and make hupper's monitor exit with it too (not wait for changes)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if reloader is not None:
        # The monitor answers graceful_shutdown with SIGTERM: exit on it, so that it
        # sees our exit code and stops instead of waiting for a change.
        signal.signal(signal.SIGTERM, lambda *_: os._exit(code))
        reloader.graceful_shutdown()
        time.sleep(SHUTDOWN_INTERVAL)
    sys.exit(code)


def _load(config: Config, reloader: Any) -> Any:
    if reloader is not None and config.module_file:
        reloader.watch_files([config.module_file])  # watched even if its import fails
    try:
        return load_application(config.target)
    except BadAppPath as exc:
        if reloader is not None and _edited_since(config.module_file, config.started):
            logger.error("%s; waiting for a change", exc)
            sys.exit(1)
        logger.error("%s", exc)
        _give_up(reloader, 2)
    except Exception as exc:
        if reloader is not None and isinstance(exc, SyntaxError) and exc.filename:
            reloader.watch_files([exc.filename])  # not in the traceback's frames
        hint = "; fix it and save: the server restarts" if reloader is not None else ""
        if isinstance(exc, SyntaxError):  # where, with the caret: the import machinery's frames say nothing
            logger.error("cannot load %s%s\n%s", config.target, hint,
                         "".join(traceback.format_exception_only(exc)).rstrip())
        else:
            logger.exception("cannot load %s%s", config.target, hint)
        sys.exit(1)


def _quiet_thread_exit(native: set[Any]) -> None:
    """Silence the harmless ``KeyError`` of threads started before monkey-patching when they end.

    hupper's worker starts its module poller thread before calling us; patched
    ``threading`` looks it up at its end by a greenlet's ident, and fails.
    """
    if not native:
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyError) and getattr(unraisable.object, "__self__", None) in native:
            return
        previous(unraisable)

    sys.unraisablehook = hook


def _listener(config: Config) -> Any:
    from gevent import socket as gsocket

    fd = bind(config.host, config.port).detach() if config.fd is None else config.fd
    sock = gsocket.socket(fileno=fd)
    sock.set_inheritable(False)  # not into the application's own subprocesses
    return sock


def run_worker(config: Config) -> None:
    """Serve ``config.target`` in this process until SIGTERM or SIGINT, then stop gracefully.

    hupper's worker entry point with ``--reload`` (``wsmiddleware.devserver.run_worker``),
    called directly without. Monkey-patches the standard library first.
    """
    import threading

    from gevent import monkey

    _quiet_thread_exit(set(threading.enumerate()) - {threading.main_thread()})
    monkey.patch_all()
    import gevent

    from .server import WSGIServer

    _setup_logging(config.log_level)
    if config.cwd not in sys.path:
        sys.path.insert(0, config.cwd)
    reloader = None
    if config.reload:
        import hupper

        reloader = hupper.get_reloader()
        if config.reload_include:
            reloader.watch_files(list(config.reload_include))
    application = _load(config, reloader)
    sock = _listener(config)
    server = WSGIServer(sock, application, log=logging.getLogger("wsmiddleware.devserver.access"),
                        error_log=logging.getLogger("wsmiddleware.devserver"))
    if config.reload:
        logger.info("worker %d serving %s", os.getpid(), config.target)
    else:
        logger.info("serving %s on %s (Ctrl-C to quit)", config.target, url_of(sock))

    def stop(why: str) -> None:
        if not server.closed:
            logger.info("%s: closing WebSockets with 1001, stopping", why)
            server.close()  # serve_forever() returns through stop(): 1001 to every WebSocket

    if reloader is not None:
        # hupper's worker ends itself with interrupt_main() when the monitor dies, which
        # gevent's loop would only notice at its next wake-up: ignore that (it comes
        # before the handlers below, so a real SIGINT still stops us) and watch here.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        gevent.spawn(_watch_monitor, stop)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stop, signal.Signals(signum).name)
    server.serve_forever(stop_timeout=STOP_TIMEOUT)


def _watch_monitor(stop: Any) -> None:
    import gevent

    monitor = os.getppid()
    while os.getppid() == monitor:
        gevent.sleep(1.0)
    stop(f"the reloader (pid {monitor}) is gone")


# -- the reloading monitor ---------------------------------------------------------------------


class _HupperLogger:
    """hupper's ``ILogger`` on top of ``logging``."""

    def error(self, msg: str) -> None:
        logger.error("%s", msg)

    def info(self, msg: str) -> None:
        # "x.py changed; reloading ..." is news; "Starting monitor for PID 123." is not.
        logger.log(logging.INFO if "changed" in msg else logging.DEBUG, "%s", msg)

    def debug(self, msg: str) -> None:
        logger.debug("%s", msg)


def run_reloader(config: Config, sock: socket.socket) -> NoReturn:
    """Serve ``config`` from hupper workers on ``sock``, a new one after each change; never returns.

    Call it without gevent's monkey-patching and without importing the
    application: that is the workers' job. Exits with the last worker's code.
    """
    import hupper  # the dev extra; the caller checks it is there

    _setup_logging(config.log_level)
    url = url_of(sock)
    if os.name == "nt":  # no descriptor inheritance through hupper there: each worker binds
        sock.close()
    else:
        sock.set_inheritable(True)  # hupper spawns its workers with close_fds=False
        config = dataclasses.replace(config, fd=sock.fileno())
    logger.info("serving %s on %s, reloading on changes (Ctrl-C to quit)", config.target, url)
    hupper.start_reloader("wsmiddleware.devserver.run_worker", reload_interval=RELOAD_INTERVAL,
                          shutdown_interval=SHUTDOWN_INTERVAL, logger=_HupperLogger(),
                          worker_kwargs={"config": config})
    sys.exit(0)  # start_reloader() exits itself
