"""Send one message to many connections, encoding its frame once (see :func:`broadcast`)."""

from __future__ import annotations

from ._fanout import broadcast
from ._frames import encode_frame

__all__ = ["broadcast", "encode_frame"]
