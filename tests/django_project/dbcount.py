"""How many database connections this process has open right now, whoever opened them.

``connection_created`` tells when a connection opens; whether it is still open is
read from the wrapper (``connection`` is ``None`` once closed). Weak references,
so that counting keeps nothing alive: a wrapper the garbage collector frees has
closed its connection with it.
"""

from __future__ import annotations

import weakref
from typing import Any

from django.db.backends.signals import connection_created

_wrappers: list[weakref.ref[Any]] = []
created = 0


def _created(sender: Any, connection: Any, **kwargs: Any) -> None:
    global created
    created += 1
    _wrappers[:] = [ref for ref in _wrappers if ref() is not None]
    if not any(ref() is connection for ref in _wrappers):
        _wrappers.append(weakref.ref(connection))


def install() -> None:
    connection_created.connect(_created, dispatch_uid="tests.django_project.dbcount")


def open_connections() -> int:
    return sum(1 for ref in _wrappers if (conn := ref()) is not None and conn.connection is not None)
