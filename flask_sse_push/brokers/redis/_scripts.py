"""The Redis broker's Lua scripts, and the entry ids and replies they deal in.

An entry id is ``"<milliseconds>-<sequence>"``, Redis' stream id format; as a
:data:`Key` tuple it compares like the ids do. Both scripts run atomically in
Redis, which is what makes a publish (store and announce) and a read (clock and
entries) consistent. The key layout is described in :mod:`.standalone.broker`.
"""

from __future__ import annotations

import json
import re
import typing as t

from ...event import ServerSentEvent

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

# note_restart(clock, last, id): on the first publish of a new Redis run, add
# the hole (last, id) to the clock hash (see PUBLISH_SCRIPT). Both brokers use it.
LUA_NOTE_RESTART = """
local function note_restart(clock, last, id)
  local ok, info = pcall(redis.call, 'INFO', 'server')
  if not ok or type(info) ~= 'string' then return end
  local run = string.match(info, 'run_id:(%x+)')
  if not run then return end
  local seen = redis.call('HGET', clock, 'run')
  if seen == run then return end
  redis.call('HSET', clock, 'run', run)
  if not seen or not last then return end
  local kept = {last .. ':' .. id}
  local holes = redis.call('HGET', clock, 'holes')
  if holes then
    for hole in string.gmatch(holes, '[^ ]+') do
      if #kept < 16 then kept[#kept + 1] = hole end
    end
  end
  redis.call('HSET', clock, 'holes', table.concat(kept, ' '))
end
"""

# KEYS: stream, clock, ids. ARGV: pub/sub channel, history, message, has user
# id ("1"/"0"), user id, then the entry's field/value pairs. Returns the new
# entry id and the channel's previous newest one ('0-0' if none): GRIP's id and
# prev-id (see flask_sse_push.grip).
#
# The clock also records the Redis run it last saw (``run``, INFO's run_id). The
# first publish of a new run (a restart, a restore, a promoted replica) adds a
# *hole* to ``holes`` (the 16 newest are kept): the newest id the data set had,
# and the id issued now. No id between the two was issued by what Redis holds
# now: a cursor in there was lost with the writes the restart did not keep.
# Without the right to run INFO (a restricted ACL user) the check is skipped.
PUBLISH_SCRIPT = (
    LUA_PUBLISH_HELPERS
    + LUA_NOTE_RESTART
    + """
local stream, clock, ids = KEYS[1], KEYS[2], KEYS[3]
-- The channel's newest id is also kept in the clock, under the stream's key:
-- a stream deleted on its own then still shows, in the next entry's prev and
-- to a resume, that it issued ids it no longer holds.
local prev = newest_id(stream)
local own = redis.call('HGET', clock, stream)
if own and newer(own, prev) then prev = own end
local top = prev
local last = redis.call('HGET', clock, 'last')
if last and newer(last, top) then top = last end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = 0
-- A new data set (none, or flushed) starts past this millisecond: an id an
-- earlier one issued in it would otherwise come again, for another event.
if not last then ms = ms + 1 end
local top_ms, top_seq = parse(top)
if ms <= top_ms then ms, seq = top_ms, top_seq + 1 end
local id = string.format('%d-%d', ms, seq)
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], id, 'prev', prev, 'before', top, unpack(ARGV, 6))
if last then
  redis.call('HSET', clock, 'last', id, stream, id)
else
  redis.call('HSET', clock, 'last', id, 'since', id, stream, id)
end
note_restart(clock, last, id)
remember_user_id(stream, ids, id)
redis.call('PUBLISH', ARGV[1], id .. ' ' .. ARGV[3])
return {id, prev}
"""
)

# KEYS: clock, n streams, n id hashes. ARGV: n, look up a user id ("1"/"0"),
# the user id, the most entries to read per stream ("" for all), then a first
# id per stream ("" skips it). A user id found in a hash replaces every first
# id. Returns last, since, the found entry id, the holes (see PUBLISH_SCRIPT),
# then each stream's entries, then each channel's newest id as the clock
# recorded it (false if none).
READ_SCRIPT = (
    _LUA_HELPERS
    + """
local n = tonumber(ARGV[1])
local clock = redis.call('HMGET', KEYS[1], 'last', 'since', 'holes')
local found = false
if ARGV[2] == '1' then
  for i = 1, n do
    local hit = redis.call('HGET', KEYS[1 + n + i], ARGV[3])
    if hit and (not found or newer(hit, found)) then found = hit end
  end
end
local out = {clock[1], clock[2], found, clock[3]}
local count = ARGV[4]
for i = 1, n do
  local first = ARGV[4 + i]
  if found then
    local f_ms, f_seq = parse(found)
    first = string.format('%d-%d', f_ms, f_seq + 1)
  end
  if first == '' then
    out[4 + i] = {}
  elseif count == '' then
    out[4 + i] = redis.call('XRANGE', KEYS[1 + i], first, '+')
  else
    out[4 + i] = redis.call('XRANGE', KEYS[1 + i], first, '+', 'COUNT', count)
  end
  out[4 + n + i] = redis.call('HGET', KEYS[1], KEYS[1 + i])
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
    """One event as read from a stream.

    ``prev`` is the stream's newest entry when it was added; ``before`` (the
    Redis broker only) the newest id under the prefix then, ``None`` in entries
    of releases that did not record it.
    """

    key: Key
    prev: Key
    event: ServerSentEvent
    before: Key | None = None


def decode_holes(raw: object) -> tuple[tuple[Key, Key], ...]:
    """Decode the clock's ``holes`` field, ``"<low>:<high> ..."``; ``None`` is none."""
    if raw is None:
        return ()
    holes = []
    for hole in as_text(raw).split():
        low, _, high = hole.partition(":")
        low_key, high_key = parse_id(low), parse_id(high)
        if low_key is not None and high_key is not None:
            holes.append((low_key, high_key))
    return tuple(holes)


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
    before = fields.get("before")
    return Entry(
        key,
        parse_id(fields.get("prev", "0-0")) or ZERO,
        event,
        None if before is None else parse_id(before),
    )


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
    """What one atomic read returned.

    ``holes`` are ranges of ids (exclusive) that the data set Redis holds never
    issued: each lies between the newest id before a restart and the first one
    after it.
    """

    last: Key | None
    since: Key | None
    found: Key | None
    entries: dict[str, list[Entry]]
    holes: tuple[tuple[Key, Key], ...] = ()
    #: Each channel's newest id as the clock recorded it at publish (absent: none).
    newest: dict[str, Key] = {}

    @property
    def head(self) -> Key:
        """The newest id issued under the prefix, ``0-0`` if none."""
        return self.last or ZERO

    def known(self, cursor: Key, channels: Iterable[str] = ()) -> bool:
        """Whether ``cursor`` was issued by this data set (no restart lost it).

        It must lie between the first and the newest id issued. A channel that
        issued an id after it must still hold an entry after it. And every entry
        records the newest id issued before it (``before``): the first entry
        after ``cursor`` on any of ``channels`` must have been added after it.
        One added after a lower id shows the data set never issued ``cursor``:
        Redis came back from a snapshot older than it, and what was published
        between the snapshot and the restart is gone. A cursor in one of the
        :attr:`holes` is as lost, whatever channel it came from.
        """
        if cursor == ZERO:
            return True
        if self.since is None or not self.since <= cursor <= self.head:
            return False
        if any(low < cursor < high for low, high in self.holes):
            return False
        return not any(self._emptied(cursor, name) for name in channels) and self._in_order(
            cursor, channels
        )

    def _emptied(self, cursor: Key, name: str) -> bool:
        """Whether ``name`` issued an id after ``cursor`` that its stream no longer
        holds, with nothing after it: the stream was deleted or emptied."""
        newest = self.newest.get(name)
        if newest is None or newest <= cursor:
            return False
        return not any(entry.key > cursor for entry in self.entries.get(name, ()))

    def _in_order(self, cursor: Key, channels: Iterable[str]) -> bool:
        """Whether the first entry after ``cursor`` on each channel was added after it."""
        for name in channels:
            for entry in self.entries.get(name, ()):
                if entry.key > cursor:
                    if entry.before is not None and entry.before < cursor:
                        return False
                    break
        return True

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
