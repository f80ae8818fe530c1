"""Channel history in Redis Streams for :class:`~wsmiddleware.pubsub.RedisPubSub`.

Per channel with history, two keys in one hash slot (the channel is the hash tag):

* ``<prefix>{<channel>}:meta``, a hash: ``epoch`` (a random string, created
  when the hash is missing: so a ``FLUSHALL``, an eviction or an expiry makes a
  new epoch) and ``head`` (the offset of the newest message);
* ``<prefix>{<channel>}:history``, a stream whose entry IDs are ``0-<offset>``
  with one field ``d``: the ``PUBLISH`` payload (see :mod:`._redis_wire`).

Publishing runs one Lua script (redis-py's documented ``Redis.register_script``:
EVALSHA, EVAL again after a Redis restart) that increments the head, appends
with ``XADD ... MAXLEN ~ N`` and publishes with the position, atomically: no
subscriber can see a message without an offset, or two with one, whichever
worker published it. Reading is a second script, so that the epoch, the head
and the entries come from one instant.

``MAXLEN ~`` trims in whole stream nodes and may keep more than N entries; what
is read is cut to the last N, so "the last N messages" holds exactly.
"""

from __future__ import annotations

from typing import Any, cast

from .base import Message
from .history import History, Position, new_epoch

__all__ = ["Keys", "publish", "read", "entries_after"]

#: KEYS: stream, meta, message id key (or the meta again: no id). ARGV: channel, payload,
#: maxlen, candidate epoch, ttl (0: none), "1" if KEYS[3] is a message id, its expiry.
_PUBLISH = r"""
if ARGV[6] == '1' then
  local first = redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[7])
  if not first then
    return {-1, '', 0}
  end
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'head', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '0-' .. offset, 'd', ARGV[2])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
local receivers = redis.call('PUBLISH', ARGV[1], '\5' .. epoch .. ':' .. offset .. '\0' .. ARGV[2])
return {receivers, epoch, offset}
"""

#: KEYS: stream, meta. ARGV: candidate epoch, ttl, mode ("none", "after", "last"),
#: first offset (after) or count (last), last offset or "" (after), count or "" (after).
_READ = r"""
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'head', 0)
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then
    redis.call('EXPIRE', KEYS[2], ttl)
  end
end
local head = redis.call('HGET', KEYS[2], 'head') or '0'
local entries = {}
if ARGV[3] == 'after' then
  local stop = '+'
  if ARGV[5] ~= '' then stop = '0-' .. ARGV[5] end
  if ARGV[6] ~= '' then
    entries = redis.call('XRANGE', KEYS[1], '0-' .. ARGV[4], stop, 'COUNT', ARGV[6])
  else
    entries = redis.call('XRANGE', KEYS[1], '0-' .. ARGV[4], stop)
  end
elseif ARGV[3] == 'last' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[4])
end
return {epoch, head, entries}
"""


class Keys:
    """Key names and scripts of one RedisPubSub (``prefix``: ``"wsm:"`` by default)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"key_prefix must not contain braces (they make the hash tag): {prefix!r}")
        self.prefix = prefix

    def of(self, channel: str) -> list[bytes]:
        base = f"{self.prefix}{{{channel}}}:".encode("utf-8", "surrogateescape")
        return [base + b"history", base + b"meta"]


class Scripts:
    """The two scripts, registered on one redis-py client (per process)."""

    __slots__ = ("publish", "read")

    def __init__(self, client: Any) -> None:
        self.publish = client.register_script(_PUBLISH)
        self.read = client.register_script(_READ)


# -- the I/O side: each runs through ProcessState.io ---------------------------------


#: How long a message id is remembered (seconds): retries come within it.
MESSAGE_ID_TTL = 3600


def publish(scripts: Scripts, client: Any, keys: list[bytes], channel: bytes, payload: bytes, size: int,
            ttl: float | None, message_id: bytes | None = None) -> tuple[int, Position | None]:
    """Append and publish in one script; ``(receivers, position)``; ``(-1, None)``
    when ``message_id`` was published already."""
    if message_id is None:
        keys, flag = [*keys, keys[1]], "0"
    else:
        keys, flag = [*keys, keys[1][: -len(b"meta")] + b"id:" + message_id], "1"
    receivers, epoch, offset = scripts.publish(
        keys=keys, args=[channel, payload, size, new_epoch(), _seconds(ttl), flag, MESSAGE_ID_TTL], client=client)
    if int(receivers) < 0:
        return -1, None
    return int(receivers), Position(_text(epoch), int(offset))


def read(scripts: Scripts, client: Any, keys: list[bytes], ttl: float | None, mode: str = "none",
         first: int | str = "", last: int | str = "", count: int | str = "") -> tuple[str, int, list[Any]]:
    """``(epoch, head, raw entries)`` (creating the epoch if the channel has none)."""
    epoch, head, entries = scripts.read(
        keys=keys, args=[new_epoch(), _seconds(ttl), mode, first, last, count], client=client)
    return _text(epoch), int(head), cast(list, entries)


def _seconds(ttl: float | None) -> int:
    return 0 if not ttl else max(1, round(ttl))


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


# -- decoding ---------------------------------------------------------------------------


def entries_after(raw: list[Any], floor: int) -> list[tuple[int, bytes]]:
    """``(offset, payload)`` of raw stream entries, oldest first, those past ``floor`` only."""
    found = []
    for entry_id, fields in raw:
        offset = int(bytes(entry_id).partition(b"-")[2])
        if offset <= floor:
            continue
        payload = b""
        for index in range(0, len(fields) - 1, 2):
            if fields[index] == b"d":
                payload = fields[index + 1]
                break
        found.append((offset, payload))
    found.sort()
    return found


def history(epoch: str, head: int, size: int, after: Position | None, entries: list[tuple[int, Message]]) -> History:
    """The :class:`History` answer from one read (``entries`` already cut to the last ``size``)."""
    if after is None:
        return History(epoch, head, entries, False)
    floor = head - size
    complete = (
        after.epoch == epoch
        and floor <= after.offset <= head
        and (after.offset == head or (bool(entries) and entries[0][0] == after.offset + 1))
    )
    return History(epoch, head, entries if complete else [], complete)
