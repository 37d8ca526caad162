"""The Redis broker: fan-out across workers and hosts, history in Redis Streams.

What it keeps in Redis, for the prefix ``P`` (default ``sse:``) and a channel ``C``:

- ``P`` + ``stream:C``: the channel's events, trimmed with ``XADD ... MAXLEN ~ history``.
- ``P`` + ``channel:C``: the pub/sub channel announcing each new entry, with the
  event in the message, so listeners need no second round trip.
- ``P`` + ``ids:C``: user-supplied event id -> entry id, so such ids resume too.
- ``P`` + ``clock``: the newest entry id under the prefix (``last``) and the first
  one issued since the data was created (``since``).

Entry ids are the SSE ids. A Lua script issues them from the one clock, so they
grow across *all* channels in publish order, and one ``Last-Event-ID`` resumes a
multi-channel subscription with ``> cursor`` on every stream. (Redis' own ``*``
ids grow per stream only: a quiet channel could get an id below a busy one's.)
The same script announces the entry, so storing and announcing are atomic.

Each process holds one subscriber connection, read by one background thread (a
greenlet under gunicorn's gevent worker), that fans out to per-client queues.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import re
import threading
import time
import typing as t

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..event import ServerSentEvent
from ..exceptions import BrokerError, SubscriptionClosed
from ..validation import check_channel
from .base import Broker, Subscription, reset_event

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["RedisBroker"]

logger = logging.getLogger("flask_sse_push")

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

# KEYS: stream, clock, ids. ARGV: pub/sub channel, history, message, has user
# id ("1"/"0"), user id, then the entry's field/value pairs.
_PUBLISH = (
    _LUA_HELPERS
    + """
local stream, clock, ids = KEYS[1], KEYS[2], KEYS[3]
local prev = '0-0'
local tail = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if tail[1] then prev = tail[1][1] end
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
redis.call('PUBLISH', ARGV[1], id .. ' ' .. ARGV[3])
return id
"""
)

# KEYS: clock, n streams, n id hashes. ARGV: n, look up a user id ("1"/"0"),
# the user id, then a first id per stream ("" skips it). A user id found in a
# hash replaces every first id. Returns last, since, the found entry id, then
# each stream's entries.
_READ = (
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
    return f"{key[0]}-{key[1]}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional_key(value: object) -> Key | None:
    return None if value is None else parse_id(_text(value))


class Entry(t.NamedTuple):
    """One event as read from a stream."""

    key: Key
    prev: Key
    event: ServerSentEvent


def _entry(raw: t.Any) -> Entry:
    entry_id = _text(raw[0])
    values = raw[1]
    fields = {_text(values[i]): _text(values[i + 1]) for i in range(0, len(values), 2)}
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


def _announced(payload: str) -> tuple[Key, ServerSentEvent]:
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


class RedisSubscription(Subscription):
    """One client's bounded queue, filled by the process' listener.

    Until :meth:`go_live` it only buffers what the listener announces, so the
    replay can be read after the client already receives live events.
    """

    def __init__(self, listener: _Listener, channels: tuple[str, ...], limit: int) -> None:
        self.channels = channels
        self._listener = listener
        self._limit = limit
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._items: collections.deque[ServerSentEvent] = collections.deque()
        self._pending: list[tuple[Key, ServerSentEvent]] | None = []
        self.attached = False  # guarded by the listener's lock
        self.connection = 0  # which of the listener's connections it started on
        # The newest id this client has (or never needs): later duplicates and
        # anything a catch-up returns up to here are skipped.
        self.last: Key = ZERO
        self._closed: SubscriptionClosed | None = None

    @property
    def live(self) -> bool:
        return self._pending is None

    def _overflow(self) -> bool:
        self._closed = SubscriptionClosed("overflow")
        self._items.clear()
        self._pending = None
        self._wake.set()
        return False

    def deliver(self, key: Key, event: ServerSentEvent) -> bool:
        """Queue a live event; return False if the client overflowed."""
        with self._lock:
            if self._closed is not None:
                return True
            pending = self._pending
            if pending is not None:
                if len(pending) >= self._limit:
                    return self._overflow()
                pending.append((key, event))
                return True
            if key <= self.last:
                return True
            if len(self._items) >= self._limit:
                return self._overflow()
            self._items.append(event)
            self.last = key
        self._wake.set()
        return True

    def go_live(self, backlog: list[ServerSentEvent], through: Key) -> bool:
        """Queue the replay, then the buffered live events newer than ``through``.

        ``through`` is the newest id the replay covers. Return False if the
        client overflowed while its replay was read.
        """
        with self._lock:
            pending = self._pending
            if self._closed is not None or pending is None:
                return self._closed is None
            self._items.extend(backlog)
            self.last = max(self.last, through)
            # A catch-up during the handover may have added older entries.
            pending.sort(key=lambda item: item[0])
            for key, event in pending:
                if key > self.last:
                    self._items.append(event)
                    self.last = key
            self._pending = None
            if not self._items:
                return True
        self._wake.set()
        return True

    def catch_up(self, snapshot: Snapshot) -> bool:
        """Queue what was published while the listener was away, or a ``reset``."""
        with self._lock:
            if self._closed is not None:
                return True
            if self._pending is not None:
                # Still handing over: go_live() drops what the replay covers.
                for entry in snapshot.after(self.last, self.channels):
                    self._pending.append((entry.key, entry.event))
                return True
            last = self.last
            if not snapshot.known(last) or snapshot.gap_after(last, self.channels):
                self._items.append(
                    reset_event(format_id(last), format_id(snapshot.head), "expired")
                )
                self.last = snapshot.head
            else:
                for entry in snapshot.after(last, self.channels):
                    if len(self._items) >= self._limit:
                        return self._overflow()
                    self._items.append(entry.event)
                    self.last = entry.key
        self._wake.set()
        return True

    def finish(self, reason: SubscriptionClosed) -> bool:
        """End the subscription; return False if it had ended already."""
        with self._lock:
            if self._closed is not None:
                return False
            self._closed = reason
            self._pending = None
        self._wake.set()
        return True

    def get(self, timeout: float | None = None) -> list[ServerSentEvent]:
        items = self._items
        if not items and self._closed is None:
            self._wake.wait(timeout)
            self._wake.clear()
        if self._closed is not None:
            raise self._closed
        batch = []
        while items:
            batch.append(items.popleft())
        return batch

    def close(self) -> None:
        self.finish(SubscriptionClosed("closed", reconnect=False))
        self._listener.detach(self)


class _Waiter:
    """One subscribe() call waiting for Redis to confirm its new channels."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.failed = False
        self.done = threading.Event()

    def confirm(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()

    def fail(self) -> None:
        self.failed = True
        self.done.set()


class _Channel:
    """The listener's view of one channel.

    Redis confirms ``SUBSCRIBE`` commands in the order they were sent, so
    counting them tells which confirmation a waiter needs, even when the
    channel is dropped and wanted again before Redis has answered.
    """

    __slots__ = ("subs", "wanted", "sent", "acked", "inflight", "waiters")

    def __init__(self) -> None:
        self.subs: tuple[RedisSubscription, ...] = ()
        self.waiters: list[tuple[int, _Waiter]] = []
        self.new_connection()

    def new_connection(self) -> None:
        self.wanted = False  # the last command sent for it was SUBSCRIBE
        self.sent = 0  # SUBSCRIBE commands sent on this connection
        self.acked = 0  # ... and confirmed
        self.inflight = 0  # SUBSCRIBE and UNSUBSCRIBE commands not yet confirmed


_IDLE, _CONNECTING, _OPEN, _DOWN = "idle", "connecting", "open", "down"

#: The name the subscriber connection has in ``CLIENT LIST``.
SUBSCRIBER_NAME = "flask_sse_push:subscriber"


class _Listener:
    """This process' one subscriber connection, and the thread that reads it.

    Whichever thread needs a ``SUBSCRIBE``, ``UNSUBSCRIBE`` or ``PING`` writes it,
    holding :attr:`lock`; only the listener thread reads.
    """

    #: Seconds of silence before the listener pings Redis, and then gives up.
    health_interval = 10.0
    #: Reconnection delays, in seconds (doubling, with jitter).
    backoff_min, backoff_max = 0.05, 2.0

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.state = _IDLE
        self.channels: dict[str, _Channel] = {}
        self.count = 0
        self.connection = 0  # counts the connections opened
        # The newest id read here: anything published later has a greater id.
        self.seen: Key = ZERO
        self.error = "not connected yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: t.Any = None
        self._prefix = broker.prefix + "channel:"
        # Subscriptions made before the first connection: they start where it does.
        self._joining: list[RedisSubscription] = []
        self._failures = 0  # failed attempts since the connection was last open

    # -- called by request threads -------------------------------------------------

    def attach(self, sub: RedisSubscription) -> _Waiter | None:
        """Register ``sub``; return a waiter if Redis must confirm a channel first.

        :raises BrokerError: the connection is down and being re-established.
        """
        with self.lock:
            if self.state == _DOWN:
                raise BrokerError(
                    f"Redis at {self.broker.where()} is unreachable ({self.error}); the"
                    " broker keeps reconnecting. Check that redis-server is running."
                )
            if self.state == _IDLE:
                self.state = _CONNECTING
                self._stop = stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(stop,), name="flask_sse_push-redis", daemon=True
                )
                self._thread.start()
            sub.last = self.seen
            sub.attached = True
            sub.connection = self.connection
            if self.state == _CONNECTING:
                sub.connection += 1  # the one being opened
                self._joining.append(sub)
            self.count += 1
            fresh = []
            unconfirmed = []
            for name in sub.channels:
                channel = self.channels.get(name)
                if channel is None:
                    channel = self.channels[name] = _Channel()
                channel.subs = (*channel.subs, sub)
                if self.state == _OPEN and not channel.wanted:
                    fresh.append(name)
                    channel.wanted = True
                    channel.sent += 1
                    channel.inflight += 1
                if self.state == _CONNECTING or channel.acked < channel.sent:
                    unconfirmed.append(channel)
            waiter = None
            if unconfirmed:
                waiter = _Waiter(len(unconfirmed))
                for channel in unconfirmed:
                    # While connecting, the connection's first SUBSCRIBE covers it.
                    channel.waiters.append((max(channel.sent, 1), waiter))
            if not fresh:
                return waiter
            try:
                self._send("SUBSCRIBE", fresh)
                return waiter
            except redis.ConnectionError as exc:
                failure = exc
        self.detach(sub)
        raise BrokerError(
            f"Could not subscribe on Redis at {self.broker.where()}: {failure}. The broker"
            " reconnects by itself; check that redis-server is running."
        ) from failure

    def detach(self, sub: RedisSubscription) -> None:
        """Unregister ``sub``; unsubscribe the channels nobody here wants any more."""
        with self.lock:
            if not sub.attached:
                return
            sub.attached = False
            self.count -= 1
            gone = []
            for name in sub.channels:
                channel = self.channels.get(name)
                if channel is None:
                    continue
                channel.subs = tuple(s for s in channel.subs if s is not sub)
                if channel.subs:
                    continue
                if self.state == _OPEN and channel.wanted:
                    gone.append(name)
                    channel.wanted = False
                    channel.inflight += 1
                elif channel.inflight == 0:
                    del self.channels[name]
            if gone:
                try:
                    self._send("UNSUBSCRIBE", gone)
                except (redis.RedisError, OSError) as exc:
                    # The listener finds the broken connection too, and reconnects.
                    logger.debug("Could not unsubscribe from Redis: %s", exc)

    def _send(self, command: str, names: list[str] | None = None) -> None:
        """Write a command on the subscriber connection; the caller holds the lock."""
        conn = self._conn
        if conn is None or not conn.is_connected:
            # Never let redis-py reconnect here: the listener thread owns that.
            raise redis.ConnectionError("the Redis subscriber connection is closed")
        args = [command, *[self._prefix + name for name in names or ()]]
        try:
            conn.send_packed_command(conn.pack_command(*args), check_health=False)
        except Exception as exc:
            # Also what a send racing the listener's own disconnect raises.
            raise redis.ConnectionError(f"could not send {command}: {exc}") from exc

    # -- the listener thread ---------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        while True:
            try:
                self._serve(stop)
                return  # it returns only when stopped
            except Exception as exc:  # whatever broke, the cure is to reconnect
                if stop.is_set():
                    return
                # One warning per outage, not one per attempt.
                log = logger.debug if self._failures else logger.warning
                log("Redis subscriber connection lost (%s); reconnecting.", exc)
                self._failures += 1
                self._mark_down(exc)
            delay = min(self.backoff_min * 2 ** min(self._failures - 1, 10), self.backoff_max)
            if stop.wait(delay * random.uniform(0.8, 1.2)):
                return

    def _serve(self, stop: threading.Event) -> None:
        conn = self._conn
        if conn is None:
            conn = self._conn = self.broker.pool.get_connection()
        if not conn.is_connected:
            conn.connect()
        # Not subscribed yet, so plain commands work: name the connection for
        # CLIENT LIST, and learn where ids stand.
        conn.send_packed_command(
            conn.pack_commands(
                [
                    ("CLIENT", "SETNAME", SUBSCRIBER_NAME),
                    ("HGET", self.broker.prefix + "clock", "last"),
                ]
            ),
            check_health=False,
        )
        conn.read_response(push_request=True)
        last = _optional_key(conn.read_response(push_request=True))
        with self.lock:
            if stop.is_set():
                return
            self.seen = max(self.seen, last or ZERO)
            self.connection += 1
            # Those that joined while connecting start where this connection does.
            for sub in self._joining:
                sub.last = max(sub.last, self.seen)
            self._joining.clear()
            names = []
            for name, channel in list(self.channels.items()):
                channel.new_connection()
                if channel.subs:
                    names.append(name)
                    channel.wanted = True
                    channel.sent = channel.inflight = 1
                else:
                    del self.channels[name]
            if names:
                self._send("SUBSCRIBE", names)
            self.state = _OPEN
        if self._failures:
            logger.info("Redis subscriber connection is back after %d attempts.", self._failures)
            self._failures = 0
        # Messages wait until the catch-up has read what was missed: delivering
        # a newer one first would make the client skip the older ones.
        held: list[t.Any] = []
        deadline = time.monotonic() + 2 * self.health_interval
        while not self._confirmed(names):
            if time.monotonic() > deadline:
                raise redis.TimeoutError("Redis did not confirm SUBSCRIBE in time")
            reply = self._read(conn, 0.5)
            if reply is not None and not self._control(reply):
                held.append(reply)
        self._catch_up(names)
        for reply in held:
            self._dispatch(reply)
        self._read_forever(conn, stop)

    def _confirmed(self, names: list[str]) -> bool:
        with self.lock:
            for name in names:
                channel = self.channels.get(name)
                if channel is not None and channel.acked < 1:
                    return False
        return True

    def _read(self, conn: t.Any, timeout: float) -> t.Any:
        if not conn.is_connected:
            raise redis.ConnectionError("the Redis subscriber connection was closed")
        if not conn.can_read(timeout=timeout):
            return None
        return conn.read_response(push_request=True)

    def _read_forever(self, conn: t.Any, stop: threading.Event) -> None:
        heard = time.monotonic()
        pinged = False
        while not stop.is_set():
            reply = self._read(conn, 1.0)
            now = time.monotonic()
            if reply is not None:
                heard, pinged = now, False
                if not self._control(reply):
                    self._dispatch(reply)
            elif now - heard > self.health_interval:
                if pinged:
                    raise redis.TimeoutError("Redis did not answer PING")
                with self.lock:
                    self._send("PING")
                heard, pinged = now, True

    def _control(self, reply: t.Any) -> bool:
        """Handle a reply that is not a message; return False for a message."""
        if not isinstance(reply, list):
            return True  # PONG, in RESP3
        kind = _text(reply[0])
        if kind == "message":
            return False
        if kind not in ("subscribe", "unsubscribe"):
            return True  # pong, in RESP2
        name = _text(reply[1])[len(self._prefix) :]
        with self.lock:
            channel = self.channels.get(name)
            if channel is None:
                return True
            channel.inflight -= 1
            if kind == "subscribe":
                channel.acked += 1
                waiting = []
                for target, waiter in channel.waiters:
                    if target <= channel.acked:
                        waiter.confirm()
                    else:
                        waiting.append((target, waiter))
                channel.waiters = waiting
            if not channel.subs and channel.inflight <= 0:
                del self.channels[name]
        return True

    def _dispatch(self, reply: t.Any) -> None:
        channel = self.channels.get(_text(reply[1])[len(self._prefix) :])
        if channel is None or not channel.subs:
            return
        try:
            key, event = _announced(_text(reply[2]))
        except (ValueError, KeyError, TypeError):
            logger.warning("Ignoring a malformed message on Redis channel %r.", _text(reply[1]))
            return
        self.seen = max(self.seen, key)
        for sub in channel.subs:
            if not sub.deliver(key, event):
                self.detach(sub)

    def _catch_up(self, names: list[str]) -> None:
        """Give subscriptions from earlier connections what was published meanwhile."""
        with self.lock:
            subs = {
                id(s): s
                for n in names
                if n in self.channels
                for s in self.channels[n].subs
                if s.connection < self.connection
            }
        firsts: dict[str, Key] = {}
        for sub in subs.values():
            for name in sub.channels:
                firsts[name] = min(firsts.get(name, sub.last), sub.last)
        if not firsts:
            return
        snapshot = self.broker.read(list(firsts), firsts=firsts)
        for sub in subs.values():
            if not sub.catch_up(snapshot):
                self.detach(sub)

    def _mark_down(self, exc: BaseException) -> None:
        with self.lock:
            self.error = str(exc) or type(exc).__name__
            self.state = _DOWN
            self._joining.clear()
            for name, channel in list(self.channels.items()):
                for _, waiter in channel.waiters:
                    waiter.fail()
                channel.waiters = []
                channel.new_connection()
                if not channel.subs:
                    del self.channels[name]
            conn = self._conn
        if conn is not None:
            conn.disconnect()

    # -- shutdown --------------------------------------------------------------------

    def close(self) -> None:
        """Stop the thread, drop the connection and end every subscription."""
        with self.lock:
            self._stop.set()
            subs = {id(s): s for c in self.channels.values() for s in c.subs}
            for channel in self.channels.values():
                for _, waiter in channel.waiters:
                    waiter.fail()
            for sub in subs.values():
                sub.attached = False
            self.channels.clear()
            self.count = 0
            self.state = _IDLE
            conn, self._conn = self._conn, None
            thread, self._thread = self._thread, None
        for sub in subs.values():
            sub.finish(SubscriptionClosed("broker closed"))
        if conn is not None:
            conn.disconnect()
            self.broker.pool.release(conn)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)


class RedisBroker(Broker):
    """Fan-out through Redis, with the history in Redis Streams.

    Every worker and host that uses the same Redis (and prefix) sees every
    event, and a client resumes on any of them. Each process opens one
    subscriber connection, when its first client subscribes, plus pooled
    connections for publishing and for resuming clients.

    A user-supplied event id is kept: it is sent as the SSE id and accepted as
    ``Last-Event-ID`` for as long as its event is in the history.

    While Redis is unreachable, :meth:`publish` and new subscriptions raise
    :class:`~flask_sse_push.BrokerError`; open subscriptions stay open, and when
    the connection is back they get what was published meanwhile, or a
    ``reset`` event if Redis lost it.

    It needs Redis 5.0 or newer (streams, and ``TIME`` in scripts). Redis
    Cluster is not supported: the scripts touch keys of several channels.

    :param client: the Redis client; its connection pool is shared by
        publishing and the subscriber connection.
    :param history: events kept per channel for replay (``MAXLEN ~``, so Redis
        may keep a few more).
    :param queue_size: events a client may fall behind by before it is
        disconnected (it then resumes through the replay).
    :param prefix: the start of every key and pub/sub channel name.
    :param subscribe_timeout: seconds to wait for Redis to confirm a new channel.

    .. code-block:: python

        broker = RedisBroker.from_url("redis://localhost:6379/0")
        sse = SSEPush(app, broker=broker)

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: redis.Redis,  # type: ignore[type-arg, unused-ignore]
        *,
        history: int = 1000,
        queue_size: int = 1000,
        prefix: str = "sse:",
        subscribe_timeout: float = 10.0,
    ) -> None:
        if history < 1 or queue_size < 1:
            raise ValueError(
                "RedisBroker needs history >= 1 and queue_size >= 1"
                f" (got history={history}, queue_size={queue_size})."
            )
        self.client = client
        self.pool = client.connection_pool
        self.history = history
        self.queue_size = queue_size
        self.prefix = prefix
        self.subscribe_timeout = subscribe_timeout
        self._publish_script = client.register_script(_PUBLISH)
        self._read_script = client.register_script(_READ)
        self._lock = threading.Lock()
        self._listener: _Listener | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        history: int = 1000,
        queue_size: int = 1000,
        prefix: str = "sse:",
        max_connections: int = 4,
    ) -> RedisBroker:
        """Connect lazily to the Redis at ``url`` (``redis://host:port/db``).

        No connection opens until the first publish or subscribe, so the broker
        can be made before a server forks its workers.

        :param max_connections: connections this process may open, the
            subscriber connection included; more callers wait for a free one.
        """
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=20,
            # Fail fast when Redis is down: the callers retry on their own terms.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        )
        return cls(
            redis.Redis(connection_pool=pool), history=history, queue_size=queue_size, prefix=prefix
        )

    def where(self) -> str:
        kwargs = self.pool.connection_kwargs
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    def _error(self, action: str, exc: Exception) -> BrokerError:
        return BrokerError(
            f"Could not {action} on Redis at {self.where()}: {exc}. Check that"
            " redis-server is running and that SSE_PUSH_BROKER_URL points at it."
        )

    def _key(self, kind: str, channel: str) -> str:
        return f"{self.prefix}{kind}:{channel}"

    def publish(self, channel: str, event: ServerSentEvent) -> str:
        check_channel(channel)
        message: dict[str, object] = {"data": event.data}
        fields = ["data", event.data]
        for name in ("event", "id", "retry"):
            value = getattr(event, name)
            if value is not None:
                message[name] = value
                fields += [name, str(value)]
        keys = [self._key("stream", channel), self.prefix + "clock", self._key("ids", channel)]
        args = [
            self._key("channel", channel),
            self.history,
            json.dumps(message, separators=(",", ":")),
            "0" if event.id is None else "1",
            event.id or "",
            *fields,
        ]
        try:
            entry_id = self._publish_script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise self._error("publish", exc) from exc
        return event.id if event.id is not None else _text(entry_id)

    def read(
        self,
        channels: list[str],
        *,
        firsts: dict[str, Key] | None = None,
        user_id: str | None = None,
    ) -> Snapshot:
        """Read the clock and, atomically, the entries after ``firsts`` (exclusive).

        If ``user_id`` is one of the channels' user-supplied ids, the entries
        after its event are read instead.
        """
        firsts = firsts or {}
        count = len(channels)
        keys = [
            self.prefix + "clock",
            *[self._key("stream", name) for name in channels],
            *[self._key("ids", name) for name in channels],
        ]
        starts = []
        for name in channels:
            first = firsts.get(name)
            starts.append("" if first is None else format_id((first[0], first[1] + 1)))
        args = [count, "0" if user_id is None else "1", user_id or "", *starts]
        try:
            raw = self._read_script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            raise self._error("read the history", exc) from exc
        entries = {
            name: [_entry(item) for item in raw[3 + i] or ()] for i, name in enumerate(channels)
        }
        return Snapshot(
            _optional_key(raw[0]), _optional_key(raw[1]), _optional_key(raw[2]), entries
        )

    def _process_listener(self) -> _Listener:
        listener = self._listener
        if listener is None or listener.pid != os.getpid():
            # After a fork the parent's thread and connection are not ours.
            with self._lock:
                listener = self._listener
                if listener is None or listener.pid != os.getpid():
                    listener = self._listener = _Listener(self)
        return listener

    def subscribe(
        self, channels: Sequence[str], *, last_event_id: str | None = None
    ) -> Subscription:
        names = tuple(dict.fromkeys(check_channel(name) for name in channels))
        if not names:
            raise ValueError("subscribe() needs at least one channel name.")
        listener = self._process_listener()
        sub = RedisSubscription(listener, names, self.queue_size)
        waiter = listener.attach(sub)
        try:
            if waiter is not None:
                if not waiter.done.wait(self.subscribe_timeout) or waiter.failed:
                    raise BrokerError(
                        f"Redis at {self.where()} did not confirm the subscription"
                        f" ({listener.error}). Check that redis-server is running."
                    )
            if last_event_id is None:
                ok = sub.go_live([], sub.last)
            else:
                ok = self._hand_over(sub, last_event_id)
        except BaseException:
            sub.finish(SubscriptionClosed("failed", reconnect=False))
            listener.detach(sub)
            raise
        if not ok:
            listener.detach(sub)
        return sub

    def _hand_over(self, sub: RedisSubscription, last_event_id: str) -> bool:
        """Replay after ``last_event_id`` into ``sub``, then switch it to live events."""
        cursor = parse_id(last_event_id)
        firsts = dict.fromkeys(sub.channels, cursor) if cursor is not None else None
        snapshot = self.read(list(sub.channels), firsts=firsts, user_id=last_event_id)
        if snapshot.found is not None:
            cursor = snapshot.found
        head = snapshot.head
        if cursor is None or not snapshot.known(cursor):
            reason = "unknown"
        elif snapshot.gap_after(cursor, sub.channels):
            reason = "expired"
        else:
            backlog = [entry.event for entry in snapshot.after(cursor, sub.channels)]
            return sub.go_live(backlog, head)
        return sub.go_live([reset_event(last_event_id, format_id(head), reason)], head)

    def cursor(self, channels: Sequence[str]) -> str:
        try:
            last = self.client.hget(self.prefix + "clock", "last")
        except (redis.RedisError, OSError) as exc:
            raise self._error("read the cursor", exc) from exc
        return "0-0" if last is None else _text(last)

    def subscriber_count(self) -> int:
        listener = self._listener
        if listener is None or listener.pid != os.getpid():
            return 0
        return listener.count

    def close(self) -> None:
        """Stop the listener, end open subscriptions and close the pool's connections."""
        listener = self._listener
        if listener is not None and listener.pid == os.getpid():
            listener.close()
        self.pool.disconnect()
