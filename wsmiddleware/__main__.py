"""The command line: ``python -m wsmiddleware serve MODULE[:ATTR] [--reload] ...``.

It checks what it can before anything starts (the options, the module path,
the port), then serves in this process or, with ``--reload``, runs hupper's
monitor: see :mod:`wsmiddleware.devserver`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from . import devserver


def build_parser() -> argparse.ArgumentParser:
    """``python -m wsmiddleware`` and its ``serve`` command."""
    parser = argparse.ArgumentParser(
        prog="python -m wsmiddleware",
        description="wsmiddleware tools. In production: gunicorn -k gevent module:application.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="development server (gevent, optional code reload)",
        description="Serve a WSGI application (WebSocket routes included) on gevent, for development. "
                    "The standard library is monkey-patched before the application is imported; "
                    "the current directory is on sys.path.",
        epilog="examples:  python -m wsmiddleware serve app:application --reload\n"
               "           python -m wsmiddleware serve examples.chat --port 8080\n"
               "           python -m wsmiddleware serve 'myproject:create_app()' --reload "
               "--reload-include 'templates/*.html'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("target", metavar="MODULE[:ATTR]",
                       help="the WSGI application: ATTR defaults to 'application', then 'app'; "
                            "a factory call such as 'create_app()' works too")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0: any free one)")
    serve.add_argument("--reload", action="store_true",
                       help="restart when a file of an imported module changes (needs hupper: "
                            "pip install 'wsmiddleware[dev]'); open WebSockets get close 1001")
    serve.add_argument("--reload-include", action="append", default=[], metavar="GLOB",
                       help="with --reload, also watch the files matching GLOB (repeatable; ** recurses; "
                            "expanded at each restart)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="logging level (default: info; info logs each request)")
    return parser


def _fail(message: str, code: int) -> int:
    print(f"wsmiddleware serve: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m wsmiddleware ARGS``; return the exit code (with ``--reload``, hupper exits itself)."""
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        return _fail(f"--port {args.port}: not a port number", 2)
    if args.reload_include and not args.reload:
        return _fail("--reload-include needs --reload", 2)
    if args.reload:
        try:
            import hupper  # noqa: F401  (the dev extra)
        except ImportError:
            return _fail(devserver.HUPPER_MISSING, 2)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        # A typo fails here, before anything starts; nothing of the application runs yet.
        module_file = devserver.find_module_file(devserver.split_target(args.target)[0])
    except devserver.BadAppPath as exc:
        return _fail(str(exc), 2)
    try:
        sock = devserver.bind(args.host, args.port)
    except OSError as exc:
        return _fail(str(exc), 1)
    config = devserver.Config(args.target, args.host, sock.getsockname()[1], reload=args.reload,
                              reload_include=tuple(args.reload_include), log_level=args.log_level,
                              module_file=module_file, cwd=cwd)
    if args.reload:
        devserver.run_reloader(config, sock)
    devserver.run_worker(dataclasses.replace(config, fd=sock.detach()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
