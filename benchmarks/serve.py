"""Benchmark servers, one per stack: ``python benchmarks/serve.py KIND PORT``.

Each WebSocket server has ``/echo`` (send every message back) and ``/broadcast``
(send every message to every connected ``/broadcast`` client), compression off,
messages up to 64 MiB, and is written the way that stack's own documentation
shows. ``raw-tcp`` echoes bytes with no framing: the ceiling for echo.
(The gunicorn variants are started by run.py with ``benchmarks.apps:application``.)
"""

from __future__ import annotations

import sys

KIND = sys.argv[1] if __name__ == "__main__" else ""
if KIND != "websockets-asyncio":
    from gevent import monkey

    monkey.patch_all()

import os  # noqa: E402
from typing import Any  # noqa: E402

MAX_SIZE = 64 * 2**20
BACKLOG = 1024


def _not_found(start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def serve_wsm_pywsgi(port: int) -> None:
    from gevent.pywsgi import WSGIServer

    from benchmarks.apps import application

    WSGIServer(("127.0.0.1", port), application, log=None, backlog=BACKLOG).serve_forever()


def serve_gws_pywsgi(port: int) -> None:
    """gevent-websocket 0.10.1: its handler answers the handshake, the app loops."""
    from gevent.pywsgi import WSGIServer
    from geventwebsocket.exceptions import WebSocketError
    from geventwebsocket.handler import WebSocketHandler

    clients: set[Any] = set()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ws = environ.get("wsgi.websocket")
        path = environ.get("PATH_INFO")
        if ws is None or path not in ("/echo", "/broadcast"):
            return _not_found(start_response)
        try:
            if path == "/echo":
                while True:
                    message = ws.receive()
                    if message is None:
                        break
                    ws.send(message)
            else:
                clients.add(ws)
                while True:
                    message = ws.receive()
                    if message is None:
                        break
                    for client in list(clients):
                        try:
                            client.send(message)
                        except WebSocketError:
                            clients.discard(client)
        except WebSocketError:
            pass
        finally:
            clients.discard(ws)
        return []

    WSGIServer(("127.0.0.1", port), app, handler_class=WebSocketHandler, log=None, backlog=BACKLOG).serve_forever()


def serve_simple_pywsgi(port: int) -> None:
    """simple-websocket (flask-sock's engine) with its default options, as flask-sock uses it."""
    from gevent.pywsgi import WSGIServer
    from simple_websocket import ConnectionClosed, Server

    clients: set[Any] = set()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO")
        if path not in ("/echo", "/broadcast"):
            return _not_found(start_response)
        ws = Server.accept(environ, max_message_size=MAX_SIZE)
        try:
            if path == "/echo":
                while True:
                    ws.send(ws.receive())
            else:
                clients.add(ws)
                while True:
                    message = ws.receive()
                    for client in list(clients):
                        try:
                            client.send(message)
                        except (ConnectionClosed, OSError):
                            clients.discard(client)
        except (ConnectionClosed, OSError):
            pass
        finally:
            clients.discard(ws)
        # flask-sock ends the request here without a response; pywsgi wants a status.
        start_response("200 OK", [("Content-Length", "0")])
        return []

    WSGIServer(("127.0.0.1", port), app, log=None, backlog=BACKLOG).serve_forever()


def serve_websockets_asyncio(port: int) -> None:
    """The ``websockets`` library's own asyncio server and its ``broadcast()``."""
    import asyncio

    from websockets.asyncio.server import broadcast, serve

    clients: set[Any] = set()

    async def handler(ws: Any) -> None:
        path = ws.request.path
        if path == "/echo":
            async for message in ws:
                await ws.send(message)
        elif path == "/broadcast":
            clients.add(ws)
            try:
                async for message in ws:
                    broadcast(clients, message)
            finally:
                clients.discard(ws)

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, max_size=MAX_SIZE, backlog=BACKLOG) as server:
            await server.serve_forever()

    asyncio.run(main())


def serve_raw_tcp(port: int) -> None:
    """Bytes in, same bytes out, no framing: what gevent sockets cost by themselves."""
    from gevent.server import StreamServer

    def handle(sock: Any, address: Any) -> None:
        recv, sendall = sock.recv, sock.sendall
        while True:
            data = recv(65536)
            if not data:
                break
            sendall(data)

    StreamServer(("127.0.0.1", port), handle, backlog=BACKLOG).serve_forever()


SERVERS = {
    "wsm-pywsgi": serve_wsm_pywsgi,
    "gws-pywsgi": serve_gws_pywsgi,
    "simple-pywsgi": serve_simple_pywsgi,
    "websockets-asyncio": serve_websockets_asyncio,
    "raw-tcp": serve_raw_tcp,
}

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    SERVERS[KIND](int(sys.argv[2]))
