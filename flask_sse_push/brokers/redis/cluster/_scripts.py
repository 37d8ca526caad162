"""The cluster broker's Lua scripts: each touches the keys of one channel only.

For the prefix ``P`` and a channel ``C`` the keys are ``P{C}:stream`` (the
history), ``P{C}:ids`` (user-supplied id -> entry id) and ``P{C}:clock`` (the
channel's newest id, the shard's run and the holes a restart left; see
:data:`PUBLISH_SCRIPT`), and the sharded pub/sub channel is ``P{C}``.
The braces are a Redis Cluster hash tag: all of them live in one slot, so a
publish is one script on one shard, and publishes of different channels
spread over the shards. There is no key every publish touches.
"""

from __future__ import annotations

from .._scripts import LUA_NOTE_RESTART, LUA_PUBLISH_HELPERS

# KEYS: stream, ids, clock. ARGV: sharded channel, history, message, has user
# id ("1"/"0"), user id, then the entry's field/value pairs. The id is the
# shard's clock in microseconds (ms-part, then microseconds * 1000 as the
# sequence), kept strictly above the channel's newest id.
#
# The clock hash keeps that newest id (``last``), which outlives a deleted
# stream, and, as the Redis broker's clock does, the shard's run and the holes
# its restarts left: the first publish of a new run adds (``last``, the new id).
# A shard restored from an older snapshot holds none of the ids in there.
PUBLISH_SCRIPT = (
    LUA_PUBLISH_HELPERS
    + LUA_NOTE_RESTART
    + """
local stream, ids, clock = KEYS[1], KEYS[2], KEYS[3]
local prev = newest_id(stream)
local last = redis.call('HGET', clock, 'last')
if last and newer(last, prev) then prev = last end
local now = redis.call('TIME')
local us = tonumber(now[2])
local ms = tonumber(now[1]) * 1000 + math.floor(us / 1000)
local seq = (us % 1000) * 1000
local p_ms, p_seq = parse(prev)
if ms < p_ms or (ms == p_ms and seq <= p_seq) then ms, seq = p_ms, p_seq + 1 end
local id = string.format('%d-%d', ms, seq)
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], id, 'prev', prev, unpack(ARGV, 6))
redis.call('HSET', clock, 'last', id)
note_restart(clock, last, id)
remember_user_id(stream, ids, id)
redis.call('SPUBLISH', ARGV[1], id .. ' ' .. ARGV[3])
return id
"""
)

# KEYS: stream, ids, clock. ARGV: first id to read ("" reads nothing), look up
# a user id ("1"/"0"), the user id, the most entries to read ("" for all). A
# user id found replaces the first id. Returns the newest entry id, the found
# entry id, the entries from the first id on (inclusive), the shard's clock in
# ms, the channel's newest id issued, its holes, and, if the shard restarted
# since the channel's last publish, when (ms, rounded up to the second) the
# restart was (false if not, or if INFO is not allowed).
READ_SCRIPT = """
local function restarted(seen, now_ms)
  if not seen then return false end
  local ok, info = pcall(redis.call, 'INFO', 'server')
  if not ok or type(info) ~= 'string' then return false end
  local run = string.match(info, 'run_id:(%x+)')
  local uptime = tonumber(string.match(info, 'uptime_in_seconds:(%d+)'))
  if not run or not uptime or run == seen then return false end
  return now_ms - uptime * 1000
end
local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local found = false
if ARGV[2] == '1' then found = redis.call('HGET', KEYS[2], ARGV[3]) end
local first = ARGV[1]
if found then first = found end
local entries = {}
if first ~= '' and ARGV[4] == '' then
  entries = redis.call('XRANGE', KEYS[1], first, '+')
elseif first ~= '' then
  entries = redis.call('XRANGE', KEYS[1], first, '+', 'COUNT', ARGV[4])
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local clock = redis.call('HMGET', KEYS[3], 'last', 'run', 'holes')
return {tail[1] and tail[1][1] or false, found, entries, ms, clock[1], clock[3],
  restarted(clock[2], ms)}
"""


def keys(prefix: str, channel: str) -> tuple[str, str, str]:
    """The stream key, the id hash key and the sharded pub/sub channel of ``channel``."""
    tag = f"{prefix}{{{channel}}}"
    return f"{tag}:stream", f"{tag}:ids", tag


def clock_key(prefix: str, channel: str) -> str:
    """The clock hash key of ``channel``: in its slot, next to its stream."""
    return f"{prefix}{{{channel}}}:clock"
