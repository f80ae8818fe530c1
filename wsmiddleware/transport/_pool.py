"""A stand-in greenlet in a server's pool for the connections parked off it.

gevent servers with a pool (pywsgi's ``WSGIServer``, gunicorn's
``gevent_pywsgi`` worker) stop by waiting for their pool, then killing what is
left. A parked connection has no greenlet there: this one is killed instead,
and closes them (``server_stop``), waiting up to their close timeout. It takes
a single slot of the pool for all of them, and ends with the last one. Only
``gevent.pool.Pool``'s documented ``add``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import PoolFull

__all__ = ["PoolTie"]

logger = logging.getLogger("wsmiddleware.transport")


class PoolTie:
    _ties: weakref.WeakKeyDictionary[Any, PoolTie] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, pool: Any) -> PoolTie | None:
        """The tie of ``pool``, made on first use; None if the pool is full."""
        tie = cls._ties.get(pool)
        if tie is None:
            tie = cls(pool)
            try:
                pool.add(tie.greenlet, blocking=False)
            except PoolFull:
                return None
            cls._ties[pool] = tie
            tie.greenlet.start()
        return tie

    def __init__(self, pool: Any) -> None:
        self.members: dict[Any, Callable[[], Any]] = {}
        self.close_timeout = 0.0
        self.empty = Event()
        self.greenlet = gevent.Greenlet(self._run, pool)

    def add(self, member: Any, server_stop: Callable[[], Any], close_timeout: float) -> None:
        self.members[member] = server_stop
        self.close_timeout = max(self.close_timeout, close_timeout)
        self.empty.clear()

    def discard(self, member: Any) -> None:
        self.members.pop(member, None)
        if not self.members:
            self.empty.set()

    def _run(self, pool: Any) -> None:
        try:
            while self.members:
                self.empty.wait()
        except gevent.GreenletExit:
            for server_stop in list(self.members.values()):
                try:
                    server_stop()
                except Exception:  # one broken connection must not keep the others open
                    logger.exception("could not close a parked connection")
            self.empty.wait(self.close_timeout)
            raise
        finally:
            if self._ties.get(pool) is self:
                del self._ties[pool]
