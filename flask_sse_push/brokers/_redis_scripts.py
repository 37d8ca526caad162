"""The Redis broker's Lua scripts, and the entry ids and replies they deal in.

An entry id is ``"<milliseconds>-<sequence>"``, Redis' stream id format; as a
:data:`Key` tuple it compares like the ids do. Both scripts run atomically in
Redis, which is what makes a publish (store and announce) and a read (clock and
entries) consistent. The key layout is described in :mod:`.redis`.
"""

from __future__ import annotations

import json
import re
import typing as t

from ..event import ServerSentEvent

if t.TYPE_CHECKING:
    from collections.abc import Iterable

#: An entry id as numbers, ``(milliseconds, sequence)``; tuples compare like ids.
Key: t.TypeAlias = "tuple[int, int]"

ZERO: Key = (0, 0)

_ID = re.compile(r"([0-9]{1,15})-([0-9]{1,15})")

_LUA_HELPERS = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function newer(a, b)
  local a_ms, a_seq = parse(a)
  local b_ms, b_seq = parse(b)
  return a_ms > b_ms or (a_ms == b_ms and a_seq > b_seq)
end
"""

# What both brokers' publish scripts do alike. ARGV (the same layout in both):
# channel, history, message, has user id ("1"/"0"), user id, then the entry's
# field/value pairs.
LUA_PUBLISH_HELPERS = (
    _LUA_HELPERS
    + """
local function newest_id(stream)
  local tail = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if tail[1] then return tail[1][1] end
  return '0-0'
end
local function remember_user_id(stream, ids, id)
  if ARGV[4] ~= '1' then return end
  redis.call('HSET', ids, ARGV[5], id)
  if redis.call('HLEN', ids) > 2 * tonumber(ARGV[2]) + 100 then
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1]
    local all = redis.call('HGETALL', ids)
    for i = 1, #all, 2 do
      if newer(head, all[i + 1]) then redis.call('HDEL', ids, all[i]) end
    end
  end
end
"""
)

# KEYS: stream, clock, ids. ARGV: pub/sub channel, history, message, has user
# id ("1"/"0"), user id, then the entry's field/value pairs. Returns the new
# entry id and the channel's previous newest one ('0-0' if none): GRIP's id and
# prev-id (see flask_sse_push.grip).
PUBLISH_SCRIPT = (
    LUA_PUBLISH_HELPERS
    + """
local stream, clock, ids = KEYS[1], KEYS[2], KEYS[3]
local prev = newest_id(stream)
local top = prev
local last = redis.call('HGET', clock, 'last')
if last and newer(last, top) then top = last end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = 0
local top_ms, top_seq = parse(top)
if ms <= top_ms then ms, seq = top_ms, top_seq + 1 end
local id = string.format('%d-%d', ms, seq)
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], id, 'prev', prev, unpack(ARGV, 6))
if last then
  redis.call('HSET', clock, 'last', id)
else
  redis.call('HSET', clock, 'last', id, 'since', id)
end
remember_user_id(stream, ids, id)
redis.call('PUBLISH', ARGV[1], id .. ' ' .. ARGV[3])
return {id, prev}
"""
)

# KEYS: clock, n streams, n id hashes. ARGV: n, look up a user id ("1"/"0"),
# the user id, then a first id per stream ("" skips it). A user id found in a
# hash replaces every first id. Returns last, since, the found entry id, then
# each stream's entries.
READ_SCRIPT = (
    _LUA_HELPERS
    + """
local n = tonumber(ARGV[1])
local clock = redis.call('HMGET', KEYS[1], 'last', 'since')
local found = false
if ARGV[2] == '1' then
  for i = 1, n do
    local hit = redis.call('HGET', KEYS[1 + n + i], ARGV[3])
    if hit and (not found or newer(hit, found)) then found = hit end
  end
end
local out = {clock[1], clock[2], found}
for i = 1, n do
  local first = ARGV[3 + i]
  if found then
    local f_ms, f_seq = parse(found)
    first = string.format('%d-%d', f_ms, f_seq + 1)
  end
  if first == '' then
    out[3 + i] = {}
  else
    out[3 + i] = redis.call('XRANGE', KEYS[1 + i], first, '+')
  end
end
return out
"""
)


def parse_id(text: str) -> Key | None:
    """Return ``text`` as a :data:`Key` if it has the form of an entry id, else ``None``."""
    match = _ID.fullmatch(text)
    if match is None:
        return None
    return int(match[1]), int(match[2])


def format_id(key: Key) -> str:
    """The inverse of :func:`parse_id`."""
    return f"{key[0]}-{key[1]}"


def entry_fields(event: ServerSentEvent) -> tuple[str, list[str]]:
    """Return what a publish stores of ``event``: the announcement's JSON, and the
    stream entry's field/value pairs.

    :raises ValueError: an explicit id has the form of the broker's own ids (an
        entry id such as ``1700000000000-0``, or a ``~`` cluster cursor): a client
        resuming from the earlier event that really had it would be matched to
        this one and skip what came between.
    """
    if event.id is not None and (parse_id(event.id) is not None or event.id.startswith("~")):
        raise ValueError(
            f"Event field 'id' {event.id!r} has the form of the Redis broker's own ids"
            " (<milliseconds>-<sequence>, or a cursor starting with '~'), so a client"
            " could not tell it from the event that id was issued to. Choose another"
            " id, or pass id=None to let the broker assign one."
        )
    message: dict[str, object] = {"data": event.data}
    fields = ["data", event.data]
    for name in ("event", "id", "retry"):
        value = getattr(event, name)
        if value is not None:
            message[name] = value
            fields += [name, str(value)]
    return json.dumps(message, separators=(",", ":")), fields


def as_text(value: object) -> str:
    """Decode a Redis reply that may be ``bytes`` (clients without ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def optional_key(value: object) -> Key | None:
    """Parse a reply that may be nil."""
    return None if value is None else parse_id(as_text(value))


class Entry(t.NamedTuple):
    """One event as read from a stream."""

    key: Key
    prev: Key
    event: ServerSentEvent


def decode_entry(raw: t.Any) -> Entry:
    """Decode one ``XRANGE`` item, ``[entry id, [field, value, ...]]``."""
    entry_id = as_text(raw[0])
    values = raw[1]
    fields = {as_text(values[i]): as_text(values[i + 1]) for i in range(0, len(values), 2)}
    retry = fields.get("retry")
    event = ServerSentEvent(
        fields.get("data", ""),
        event=fields.get("event"),
        id=fields.get("id", entry_id),
        retry=None if retry is None else int(retry),
    )
    key = parse_id(entry_id)
    assert key is not None
    return Entry(key, parse_id(fields.get("prev", "0-0")) or ZERO, event)


def decode_announcement(payload: str) -> tuple[Key, ServerSentEvent]:
    """Decode a pub/sub announcement, ``"<entry id> <json fields>"``."""
    entry_id, _, body = payload.partition(" ")
    key = parse_id(entry_id)
    if key is None:
        raise ValueError(f"not an entry id: {entry_id!r}")
    fields = json.loads(body)
    event = ServerSentEvent(
        fields["data"],
        event=fields.get("event"),
        id=fields.get("id", entry_id),
        retry=fields.get("retry"),
    )
    return key, event


class Snapshot(t.NamedTuple):
    """What one atomic read returned."""

    last: Key | None
    since: Key | None
    found: Key | None
    entries: dict[str, list[Entry]]

    @property
    def head(self) -> Key:
        """The newest id issued under the prefix, ``0-0`` if none."""
        return self.last or ZERO

    def known(self, cursor: Key) -> bool:
        """Whether ``cursor`` was issued by this data set (no restart lost it)."""
        if cursor == ZERO:
            return True
        return self.since is not None and self.since <= cursor <= self.head

    def gap_after(self, cursor: Key, channels: Iterable[str]) -> bool:
        """Whether an entry newer than ``cursor`` was trimmed from a stream.

        Every entry names its predecessor, so the first one after ``cursor``
        shows whether something between them is gone.
        """
        for name in channels:
            for entry in self.entries.get(name, ()):
                if entry.key > cursor:
                    if entry.prev > cursor:
                        return True
                    break
        return False

    def after(self, cursor: Key, channels: Iterable[str]) -> list[Entry]:
        """The entries newer than ``cursor`` on ``channels``, oldest first."""
        found = [e for name in channels for e in self.entries.get(name, ()) if e.key > cursor]
        found.sort(key=lambda entry: entry.key)
        return found
