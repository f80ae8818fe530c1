"""Database connections and caches around WebSocket callbacks, closed the way Django closes them around a request.

Django keeps one connection per alias *per thread*; under gevent's monkey-patching
a thread is a greenlet (``connections`` is an ``asgiref.local.Local``, keyed by
``_thread.get_ident()``). A WebSocket connection's callbacks do not all run in one
greenlet: under gevent.pywsgi an idle connection parks and the next message
starts a new reader greenlet. Left alone, every reader greenlet that touched the
ORM keeps its connection open until garbage collection reaches it (the wrappers
sit in reference cycles), so the open connections grow with the history of
park/wake cycles.

Around each callback this module does what Django's ``request_started`` and
``request_finished`` receivers do for a request: :func:`django.db.close_old_connections`
before and after (which honours ``CONN_MAX_AGE`` and drops unusable connections),
and ``caches.close_all()`` after. With ``CONN_MAX_AGE = 0`` (the default) that
closes what the callback opened. With persistent connections (``CONN_MAX_AGE > 0``
or ``None``) a connection stays for the next callbacks of the same greenlet, as
Django keeps it for the next request of a thread, and is closed when that
greenlet ends: nothing could use it afterwards. Either way the open connections
are bounded by the greenlets running callbacks at once.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import gevent
from django.core.cache import caches
from django.db import close_old_connections, connections

__all__ = ["before_callback", "after_callback", "hold_until_greenlet_ends"]

logger = logging.getLogger("wsmiddleware.django")

#: greenlet -> the database wrappers it keeps open past a callback (persistent connections).
_held: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def before_callback() -> None:
    """As Django's ``request_started``: drop connections that are obsolete or broken.

    A greenlet can only hold a connection at this point if an earlier callback or
    its handshake left one open, and those are in ``_held``: a fresh greenlet, or
    one whose connections were all closed, skips the pass over the aliases.
    """
    if gevent.getcurrent() in _held:
        close_old_connections()


def after_callback() -> None:
    """As Django's ``request_finished``; what stays open is closed when this greenlet ends."""
    still_open = []
    for conn in connections.all(initialized_only=True):
        conn.close_if_unusable_or_obsolete()  # close_old_connections(), in the pass that finds what stays
        if conn.connection is not None:
            still_open.append(conn)
    caches.close_all()
    if still_open:
        _hold(still_open)


def hold_until_greenlet_ends() -> None:
    """Close the current greenlet's still-open database connections when it ends (after a handshake)."""
    still_open = [conn for conn in connections.all(initialized_only=True) if conn.connection is not None]
    if still_open:
        _hold(still_open)


def _hold(still_open: list[Any]) -> None:
    """Only persistent connections (CONN_MAX_AGE > 0 or None) get here."""
    current = gevent.getcurrent()
    held = _held.get(current)
    if held is None:
        rawlink = getattr(current, "rawlink", None)
        if rawlink is None:
            # Not a gevent.Greenlet (a raw greenlet, the main one): nothing reports
            # its end, so keeping a connection would make it unbounded again.
            for conn in still_open:
                conn.close()
            return
        held = _held[current] = []
        rawlink(_greenlet_ended)
    for conn in still_open:
        if not any(conn is known for known in held):
            held.append(conn)


def _greenlet_ended(greenlet: Any) -> None:
    """From the hub, once a greenlet holding connections has ended."""
    held = _held.pop(greenlet, None)
    if held:
        # Closing may do I/O (a PostgreSQL goodbye, a pool checkin): not in the hub.
        gevent.spawn(_close, held)


def _close(held: list[Any]) -> None:
    for conn in held:
        if conn.connection is None:
            continue
        # The wrapper belongs to the greenlet that ended: Django refuses to close
        # it from another "thread" unless sharing is allowed, as LiveServerThread does.
        conn.inc_thread_sharing()
        try:
            conn.close()
        except Exception:
            logger.exception("closing database connection %r of an ended greenlet failed", conn.alias)
        finally:
            conn.dec_thread_sharing()
