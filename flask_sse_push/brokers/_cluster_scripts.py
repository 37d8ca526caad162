"""The cluster broker's Lua scripts: each touches the keys of one channel only.

For the prefix ``P`` and a channel ``C`` the keys are ``P{C}:stream`` (the
history) and ``P{C}:ids`` (user-supplied id -> entry id), and the sharded
pub/sub channel is ``P{C}``. The braces are a Redis Cluster hash tag: all three
live in one slot, so a publish is one script on one shard, and publishes of
different channels spread over the shards. There is no key every publish
touches.
"""

from __future__ import annotations

from ._redis_scripts import _LUA_HELPERS

# KEYS: stream, ids. ARGV: sharded channel, history, message, has user id
# ("1"/"0"), user id, then the entry's field/value pairs. The id is the shard's
# clock in microseconds (ms-part, then microseconds * 1000 as the sequence), kept
# strictly above the stream's newest id.
PUBLISH_SCRIPT = (
    _LUA_HELPERS
    + """
local stream, ids = KEYS[1], KEYS[2]
local prev = '0-0'
local tail = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if tail[1] then prev = tail[1][1] end
local now = redis.call('TIME')
local us = tonumber(now[2])
local ms = tonumber(now[1]) * 1000 + math.floor(us / 1000)
local seq = (us % 1000) * 1000
local p_ms, p_seq = parse(prev)
if ms < p_ms or (ms == p_ms and seq <= p_seq) then ms, seq = p_ms, p_seq + 1 end
local id = string.format('%d-%d', ms, seq)
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], id, 'prev', prev, unpack(ARGV, 6))
if ARGV[4] == '1' then
  redis.call('HSET', ids, ARGV[5], id)
  if redis.call('HLEN', ids) > 2 * tonumber(ARGV[2]) + 100 then
    local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1]
    local all = redis.call('HGETALL', ids)
    for i = 1, #all, 2 do
      if newer(head, all[i + 1]) then redis.call('HDEL', ids, all[i]) end
    end
  end
end
redis.call('SPUBLISH', ARGV[1], id .. ' ' .. ARGV[3])
return id
"""
)

# KEYS: stream, ids. ARGV: first id to read ("" reads nothing), look up a user
# id ("1"/"0"), the user id. A user id found replaces the first id. Returns the
# newest entry id, the found entry id, then the entries from the first id on
# (inclusive).
READ_SCRIPT = """
local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local found = false
if ARGV[2] == '1' then found = redis.call('HGET', KEYS[2], ARGV[3]) end
local first = ARGV[1]
if found then first = found end
local entries = {}
if first ~= '' then entries = redis.call('XRANGE', KEYS[1], first, '+') end
return {tail[1] and tail[1][1] or false, found, entries}
"""


def keys(prefix: str, channel: str) -> tuple[str, str, str]:
    """The stream key, the id hash key and the sharded pub/sub channel of ``channel``."""
    tag = f"{prefix}{{{channel}}}"
    return f"{tag}:stream", f"{tag}:ids", tag
