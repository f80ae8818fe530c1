"""Run a WSGI app under a given server: ``python -m tests.serve KIND module:app PORT``."""

from __future__ import annotations

import sys

kind, target, port_text = sys.argv[1], sys.argv[2], sys.argv[3]
port = int(port_text)

if kind != "wsgiref":
    from gevent import monkey

    monkey.patch_all()

import importlib
import logging
import signal

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
module_name, _, attr = target.partition(":")
application = getattr(importlib.import_module(module_name), attr or "application")

if kind == "wsgiref":
    from wsgiref.simple_server import make_server

    make_server("127.0.0.1", port, application).serve_forever()
else:
    import gevent
    from gevent.pywsgi import WSGIServer

    handler_class = None
    if kind == "geventwebsocket":
        from geventwebsocket.handler import WebSocketHandler

        handler_class = WebSocketHandler
    kwargs = {"handler_class": handler_class} if handler_class else {}
    server = WSGIServer(("127.0.0.1", port), application, **kwargs)

    def stop() -> None:
        server.stop(timeout=10)

    gevent.signal_handler(signal.SIGTERM, stop)
    server.serve_forever()
