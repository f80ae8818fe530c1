"""The wsmiddleware application every wsmiddleware benchmark server runs.

``/echo`` sends each message back; ``/broadcast`` sends each message it receives
to every connected ``/broadcast`` client. Compression is off, as for the anchors.

Broadcast goes through ``wsmiddleware.broadcast`` (encode once, never block on a
slow reader) when the package has it, else through a loop of ``write`` calls.
With ``WSM_BENCH_REDIS`` set, ``/broadcast`` goes through ``RedisPubSub`` instead,
so that subscribers in different gunicorn workers all get every message; each
such connection first receives ``"pid N"`` so the load generator can show how
connections spread over the workers. ``WSM_BENCH_PUBSUB=memory`` makes it a
``PubSubWS`` on ``MemoryPubSub`` (in one process), and ``WSM_BENCH_HISTORY=N``
gives either backend a history of N messages per channel (the cost of history).
"""

from __future__ import annotations

import os
from typing import Any

from wsmiddleware import WS, WebSocketMiddleware

try:
    from wsmiddleware import broadcast as _broadcast_module
except ImportError:  # the pub/sub layer is optional for the benchmark
    _broadcast_module = None

_broadcast = getattr(_broadcast_module, "broadcast", _broadcast_module) if _broadcast_module else None
if _broadcast is not None and not callable(_broadcast):
    _broadcast = None

BROADCAST_KIND = "wsmiddleware.broadcast" if _broadcast is not None else "write loop"


class Echo(WS):
    def on_message(self, websocket: Any, message: str) -> None:
        websocket.write(message)

    def on_bytes(self, websocket: Any, data: bytes) -> None:
        websocket.write(data)


class Broadcast(WS):
    """Every message goes to every connected client of this route, sender included."""

    def __init__(self) -> None:
        self.clients: set[Any] = set()

    def on_open(self, websocket: Any) -> None:
        self.clients.add(websocket)

    def on_close(self, websocket: Any) -> None:
        self.clients.discard(websocket)

    def on_message(self, websocket: Any, message: str) -> None:
        self.send_all(message)

    def on_bytes(self, websocket: Any, data: bytes) -> None:
        self.send_all(data)

    if _broadcast is not None:

        def send_all(self, message: str | bytes) -> None:
            _broadcast(self.clients, message)

    else:

        def send_all(self, message: str | bytes) -> None:
            for client in list(self.clients):
                if not client.closed:
                    try:
                        client.write(message)
                    except Exception:  # a client closing meanwhile is not the benchmark's concern
                        pass


def _pubsub_classes() -> tuple[Any, Any] | None:
    """``(PubSubWS, RedisPubSub)`` if this wsmiddleware has them (the cross-worker scenario)."""
    try:
        from wsmiddleware import PubSubWS  # type: ignore[attr-defined]
        from wsmiddleware.pubsub import RedisPubSub  # type: ignore[attr-defined]
    except ImportError:
        return None
    return PubSubWS, RedisPubSub


def redis_available() -> bool:
    return _pubsub_classes() is not None


def _pubsub_route(backend: str) -> WS:
    classes = _pubsub_classes()
    if classes is None:
        raise RuntimeError("this wsmiddleware has no RedisPubSub / PubSubWS")
    pubsub_ws, redis_pubsub = classes
    history = int(os.environ.get("WSM_BENCH_HISTORY") or 0)
    options = {"history": history} if history else {}
    if backend == "memory":
        from wsmiddleware.pubsub import MemoryPubSub

        pubsub = MemoryPubSub(**options)
    else:
        pubsub = redis_pubsub(backend, **options)

    class Announcing(pubsub_ws):  # type: ignore[misc, valid-type]
        def on_open(self, websocket: Any) -> None:
            websocket.write(f"pid {os.getpid()}")
            super().on_open(websocket)

    return Announcing(pubsub, channel="bench")


def not_found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def make_application() -> WebSocketMiddleware:
    backend = os.environ.get("WSM_BENCH_REDIS") or os.environ.get("WSM_BENCH_PUBSUB")
    routes: dict[str, Any] = {"/echo": Echo(), "/broadcast": Broadcast()}
    if backend:
        routes["/broadcast"] = _pubsub_route(backend)
    return WebSocketMiddleware(not_found, routes, compression=None, max_message_size=64 * 2**20)


application = make_application()
