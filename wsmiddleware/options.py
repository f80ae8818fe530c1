"""Connection options: their defaults, and how per-route values override them."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal

__all__ = ["Options"]


@dataclass(frozen=True)
class Options:
    """Every tunable of a WebSocket connection, with a safe default.

    Given to :class:`~wsmiddleware.WebSocketMiddleware` as keyword arguments and
    overridable per route by :meth:`~wsmiddleware.WebSocketMiddleware.mount`.
    """

    #: Largest incoming message, in bytes after decompression; over it: close 1009.
    max_message_size: int | None = 2**20
    #: Seconds without traffic before a keepalive ping; ``None`` turns keepalive off.
    ping_interval: float | None = 20.0
    #: Seconds to wait for the pong before closing the connection (1011).
    ping_timeout: float | None = 20.0
    #: ``"deflate"`` negotiates permessage-deflate (RFC 7692); ``None`` turns it off.
    compression: Literal["deflate"] | None = "deflate"
    #: ``None``: same-origin policy. A list: exact origins, or ``"*"`` for any.
    allowed_origins: tuple[str, ...] | None = None
    #: Bytes a connection may have queued for a slow reader before the policy applies.
    send_queue_limit: int = 4 * 2**20
    #: ``"close"``: close the slow reader with 1008. ``"drop"``: drop and count messages.
    slow_consumer: Literal["close", "drop"] = "close"
    #: Seconds the closing handshake may take before the TCP connection is dropped.
    close_timeout: float = 5.0

    def merged(self, overrides: dict[str, Any]) -> Options:
        """A copy with ``overrides`` applied; unknown names raise ``TypeError``."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown WebSocket option(s): {', '.join(sorted(unknown))}")
        values = dict(overrides)
        if values.get("allowed_origins") is not None:
            values["allowed_origins"] = tuple(values["allowed_origins"])
        if values.get("slow_consumer", "close") not in ("close", "drop"):
            raise ValueError("slow_consumer must be 'close' or 'drop'")
        if values.get("compression", "deflate") not in ("deflate", None):
            raise ValueError("compression must be 'deflate' or None")
        return replace(self, **values)
