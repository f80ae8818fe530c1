"""Path templates such as ``/rooms/{room}`` or ``/items/{id:int}``, compiled once.

A template is matched against ``PATH_INFO``: the part of the URL below the point
where the WSGI application (and so the middleware) is mounted. That keeps routes
stable when the whole app moves under a prefix (``SCRIPT_NAME``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Route", "Router", "CONVERTERS"]

#: converter name -> (regular expression, function turning the matched text into a value)
CONVERTERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "str": (r"[^/]+", str),
    "int": (r"[0-9]+", int),
    "float": (r"[0-9]+(?:\.[0-9]+)?", float),
    "path": (r".+", str),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID),
}

_SEGMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")


def compile_template(template: str) -> tuple[re.Pattern[str], dict[str, Callable[[str], Any]]]:
    """Turn a template into an anchored regex and the converters of its named segments."""
    if not template.startswith("/"):
        raise ValueError(f"route template must start with '/': {template!r}")
    parts: list[str] = []
    converters: dict[str, Callable[[str], Any]] = {}
    position = 0
    for match in _SEGMENT.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        name, kind = match.group(1), match.group(2) or "str"
        if kind not in CONVERTERS:
            raise ValueError(f"unknown converter {kind!r} in route {template!r}")
        if name in converters:
            raise ValueError(f"segment {name!r} appears twice in route {template!r}")
        pattern, convert = CONVERTERS[kind]
        parts.append(f"(?P<{name}>{pattern})")
        converters[name] = convert
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts) + r"\Z"), converters


@dataclass(frozen=True)
class Route:
    """One mounted handler: its template, the compiled matcher and per-route options."""

    template: str
    handler: Any
    options: dict[str, Any]
    regex: re.Pattern[str]
    converters: dict[str, Callable[[str], Any]]

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted ``url_vars`` if ``path`` matches, else ``None``."""
        found = self.regex.match(path)
        if found is None:
            return None
        try:
            return {name: self.converters[name](value) for name, value in found.groupdict().items()}
        except ValueError:
            return None


class Router:
    """Routes in mounting order; the first that matches wins."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, template: str, handler: Any, options: dict[str, Any] | None = None) -> Route:
        regex, converters = compile_template(template)
        route = Route(template, handler, dict(options or {}), regex, converters)
        self.routes.append(route)
        return route

    def match(self, path: str) -> tuple[Route, dict[str, Any]] | None:
        for route in self.routes:
            url_vars = route.match(path)
            if url_vars is not None:
                return route, url_vars
        return None
