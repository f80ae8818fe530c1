"""The open server connections of one middleware (never of the process).

A :class:`Registry` belongs to a :class:`~wsmiddleware.WebSocketMiddleware`:
it counts connections for ``max_connections`` and is what graceful shutdown
closes. Client connections are never in one. Registries are reachable from
:func:`registries` (weakly held) so that a server stopping can close the
connections that came through it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

__all__ = ["Registry", "registries", "server_connections"]

_all: weakref.WeakSet[Registry] = weakref.WeakSet()


class Registry:
    """A set of open server connections, with a count per route."""

    __slots__ = ("_connections", "_per_route", "__weakref__")

    def __init__(self) -> None:
        self._connections: dict[Any, Any] = {}
        self._per_route: dict[Any, int] = {}
        _all.add(self)

    def add(self, websocket: Any, route: Any = None) -> None:
        if websocket in self._connections:
            return
        self._connections[websocket] = route
        self._per_route[route] = self._per_route.get(route, 0) + 1

    def discard(self, websocket: Any) -> None:
        if websocket not in self._connections:
            return
        route = self._connections.pop(websocket)
        left = self._per_route[route] - 1
        if left:
            self._per_route[route] = left
        else:
            del self._per_route[route]

    def count(self, route: Any = None) -> int:
        """Open connections in all, or of one route."""
        return len(self._connections) if route is None else self._per_route.get(route, 0)

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._connections))

    def __contains__(self, websocket: object) -> bool:
        return websocket in self._connections


def registries() -> list[Registry]:
    return list(_all)


def server_connections(*origins: Any) -> set[Any]:
    """Open server connections of every middleware of this process; with
    ``origins``, only those that came through one of those servers."""
    found = set()
    for registry in registries():
        for websocket in registry:
            if not origins or websocket.transport.origin in origins:
                found.add(websocket)
    return found
