"""One pub/sub connection, as both Redis listeners hold it.

The single-node listener holds one; the cluster listener one per shard, with
sharded pub/sub (``SSUBSCRIBE``). A connection sends the subscribe and
unsubscribe commands, counts Redis' confirmations and releases those waiting for
them, pings Redis when it falls silent, and reads in batches that let other
greenlets run. Redis confirms one connection's subscribe commands in the order
they were sent, so counting them per channel tells which confirmation a waiter
needs, even when the channel is dropped and wanted again before Redis answered.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

import redis
from redis.exceptions import AskError

from ...exceptions import SubscriptionClosed
from ._scripts import as_text, decode_announcement

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from ...event import ServerSentEvent
    from ._channels import ListenerBase
    from ._scripts import Key

    Owner: t.TypeAlias = ListenerBase[t.Any, t.Any]


class Source(t.Protocol):
    """The broker's side a connection needs to check an announcement."""

    rejected_messages: int

    def holds(self, channel: str, key: Key) -> bool: ...


logger = logging.getLogger("flask_sse_push")

#: The name every subscriber connection has in ``CLIENT LIST``.
SUBSCRIBER_NAME = "flask_sse_push:subscriber"
#: Replies read in a row before other greenlets may run.
DISPATCH_BATCH = 128
#: Channels named in one subscribe command, and handled in one step of a
#: resubscribe or catch-up: few round trips, and no step holds the worker long.
BATCH = 500
#: Seconds to pause between two such steps. Not 0: gevent runs up to 50
#: ``sleep(0)`` wake-ups in a row before it looks at its timers and sockets, so
#: steps that yield with ``sleep(0)`` still add up to a long stall.
RECOVERY_PAUSE = 0.001
#: Seconds added per channel to a deadline for Redis' confirmations (Redis
#: confirms a few thousand a second even on a busy host), so no count is too many.
CONFIRM_ALLOWANCE = 0.002
#: Seconds of silence before a connection pings Redis, and then gives up.
HEALTH_INTERVAL = 10.0
#: Milliseconds an announced id may lie ahead of Redis' clock (as read when the
#: connection opened) before the stream is asked whether it holds the entry.
AHEAD = 100

_T = t.TypeVar("_T")
#: A message: its channel name, entry id and event.
Item: t.TypeAlias = "tuple[str, Key, ServerSentEvent]"
#: Takes a message.
Deliver = t.Callable[[str, "Key", "ServerSentEvent"], None]


def paced(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    """``items`` a :data:`BATCH` at a time, pausing :data:`RECOVERY_PAUSE` after each."""
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]
        time.sleep(RECOVERY_PAUSE)


def resubscribe(
    owner: Owner, names: Sequence[str], keep: Callable[[str], bool]
) -> tuple[list[str], list[Waiter]]:
    """Subscribe again those of ``names`` to ``keep``, a batch at a time.

    Returns them (not those gone, or dropped meanwhile) and the waiters for
    Redis' confirmations. Those subscribed again meanwhile are not sent twice.
    """
    kept: list[str] = []
    waiters: list[Waiter] = []
    for batch in paced(names):
        with owner.lock:
            batch = [name for name in batch if keep(name)]
            kept += batch
            waiters.append(owner._subscribe(batch))
    return kept, waiters


def settle(owner: Owner, subs: Iterable[_T], step: Callable[[_T], bool]) -> None:
    """Apply ``step`` to each of ``subs``; detach those it refused (they overflowed).

    The caller does not hold the lock.
    """
    for sub in [sub for sub in subs if not step(sub)]:
        owner.detach(sub)


def release(held: Iterable[Item], dispatch: Deliver) -> None:
    """Dispatch the messages held back during a recovery, letting other greenlets run."""
    for count, item in enumerate(held, 1):
        dispatch(*item)
        if count % DISPATCH_BATCH == 0:
            time.sleep(RECOVERY_PAUSE)


def close_all(owner: Owner, subscribers: Iterable[Subscriber]) -> None:
    """Fail the waiters of ``subscribers`` for good, drop their connections and end
    every subscription of ``owner`` (at shutdown)."""
    with owner.lock:
        for subscriber in subscribers:
            subscriber.lost(dead=True)
        subs = owner._leave_all()
    for sub in subs:
        sub.finish(SubscriptionClosed("broker closed"))
    for subscriber in subscribers:
        if subscriber.conn is not None:
            subscriber.conn.disconnect()


def handshake(conn: t.Any, *commands: tuple[str, ...]) -> tuple[list[t.Any], tuple[int, float]]:
    """Send ``commands`` on a connection not subscribed yet; return their replies
    and Redis' clock: its milliseconds, and the :func:`time.monotonic` time before."""
    before = time.monotonic()
    conn.send_packed_command(conn.pack_commands([*commands, ("TIME",)]), check_health=False)
    replies = [conn.read_response(push_request=True) for _ in range(len(commands) + 1)]
    seconds, micros = map(int, replies.pop())
    return replies, (seconds * 1000 + micros // 1000, before)


def confirm_deadline(base: float, channels: int) -> float:
    """The :func:`time.monotonic` time by which Redis should confirm ``channels``."""
    return time.monotonic() + base + channels * CONFIRM_ALLOWANCE


class Waiter:
    """Callers waiting for Redis to confirm ``count`` subscribe commands."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.failed = False
        self.done = threading.Event()
        if count <= 0:
            self.done.set()

    def confirm(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()

    def fail(self) -> None:
        self.failed = True
        self.done.set()


class _Counts:
    """One channel on one connection."""

    __slots__ = ("on", "sent", "acked", "leaving", "waiters")

    def __init__(self, waiters: list[tuple[int, Waiter]]) -> None:
        self.on = False  # the last command sent (or to send once open) is a subscribe
        self.sent = self.acked = 0  # subscribe commands sent, and confirmed
        self.leaving = 0  # unsubscribe commands not confirmed yet
        self.waiters = waiters  # (the confirmation it needs, waiter)


class Subscriber:
    """One pub/sub connection: what was subscribed on it, who waits, and its reader.

    Whichever thread needs a command writes it holding :attr:`lock` (the
    listener's), as it does to call any method but :meth:`read`: only the
    thread of this connection reads.

    :param source: the broker, which checks and counts announcements.
    :param sharded: ``SSUBSCRIBE`` (a cluster shard) rather than ``SUBSCRIBE``.
    :param commands: the commands that subscribe (or unsubscribe) channel names.
    :param name_of: a channel name from the Redis channel of a reply.
    """

    def __init__(
        self,
        lock: threading.Lock,
        source: Source,
        *,
        sharded: bool,
        commands: Callable[[str, Sequence[str]], list[tuple[str, ...]]],
        name_of: Callable[[object], str],
    ) -> None:
        self.lock, self.source = lock, source
        self.conn: t.Any = None
        self.clock = (0, 0.0)  # see handshake()
        self.open = False  # commands may be sent
        self.dead = False  # for good: waiters fail at once
        self.backend = "Redis Cluster" if sharded else "Redis"
        self._kinds = (
            ("smessage", "ssubscribe", "sunsubscribe")
            if sharded
            else ("message", "subscribe", "unsubscribe")
        )
        self._commands = commands
        self._name_of = name_of
        self._counts: dict[str, _Counts] = {}

    def opened(self, conn: t.Any, clock: tuple[int, float]) -> None:
        """Count afresh on ``conn``; a waiter kept waits for its first subscribe."""
        self.conn, self.open, self.clock = conn, True, clock
        self._counts = {name: _Counts(c.waiters) for name, c in self._counts.items() if c.waiters}

    def subscribed(self, name: str) -> bool:
        counts = self._counts.get(name)
        return counts is not None and counts.on

    def send(self, names: Sequence[str], *, subscribe: bool = True) -> None:
        """Subscribe (or unsubscribe) ``names``.

        :raises redis.ConnectionError: the connection is closed.
        """
        if not names:
            return
        for name in names:
            counts = self._get(name)
            counts.on = subscribe
            counts.sent += subscribe
            counts.leaving += not subscribe
        command = self._kinds[1 if subscribe else 2].upper()
        self._write(self._commands(command, names), command)

    def expect(self, name: str, waiter: Waiter) -> None:
        """Confirm ``waiter`` once Redis confirmed the last subscribe of ``name``
        (before the connection is open, its first one)."""
        counts = self._get(name)
        target = max(counts.sent, 1)
        if self.dead:
            waiter.fail()
        elif counts.acked >= target:
            waiter.confirm()
        else:
            counts.waiters.append((target, waiter))

    def forget(self, name: str, *, handed: bool) -> None:
        """Drop ``name``: Redis refused it here. Its waiters are confirmed if
        another subscription took it over (``handed``), else they fail."""
        counts = self._counts.pop(name, None)
        for _, waiter in counts.waiters if counts is not None else ():
            if handed:
                waiter.confirm()
            else:
                waiter.fail()

    def lost(self, *, dead: bool = False) -> None:
        """The connection broke (``dead``: for good); fail the waiters."""
        self.open = False
        self.dead = self.dead or dead
        for counts in self._counts.values():
            for _, waiter in counts.waiters:
                waiter.fail()
            counts.waiters = []

    def _get(self, name: str) -> _Counts:
        counts = self._counts.get(name)
        if counts is None:
            counts = self._counts[name] = _Counts([])
        return counts

    def _write(self, commands: list[tuple[str, ...]], what: str) -> None:
        conn = self.conn
        if conn is None or not self.open or not conn.is_connected:
            # Never let redis-py reconnect here: the connection's thread owns that.
            raise redis.ConnectionError("the Redis subscriber connection is closed")
        try:
            conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        except Exception as exc:
            # Also what a send racing the listener's own disconnect raises.
            raise redis.ConnectionError(f"could not send {what}: {exc}") from exc

    # -- the reader ------------------------------------------------------------------

    def read(
        self,
        until: Callable[[], bool],
        deliver: Deliver,
        *,
        deadline: float | None = None,
        dropped: Callable[[str], None] | None = None,
        refused: Callable[[int], None] | None = None,
    ) -> None:
        """Read replies until ``until()``; hand each message to ``deliver``.

        :param deadline: the :func:`time.monotonic` time by which ``until()``
            must be true.
        :param dropped: called with each channel Redis unsubscribed by itself.
        :param refused: called with the slot of each subscribe command a
            cluster node refused (``-MOVED``, ``-ASK``); without it, one raises.
        :raises redis.RedisError: the connection broke, Redis fell silent, or the
            deadline passed.
        """
        conn = self.conn
        heard = time.monotonic()
        pinged = False
        read = confirmed = 0
        while not until():
            if deadline is not None and time.monotonic() > deadline:
                raise redis.TimeoutError("Redis did not confirm the subscriptions in time")
            if not conn.is_connected:
                raise redis.ConnectionError("the Redis subscriber connection was closed")
            if not conn.can_read(timeout=1.0 if deadline is None else 0.5):
                if time.monotonic() - heard > HEALTH_INTERVAL:
                    if pinged:
                        raise redis.TimeoutError("Redis did not answer PING")
                    with self.lock:
                        self._write([("PING",)], "PING")
                    heard, pinged = time.monotonic(), True
                continue
            reply = self._reply(conn, refused)
            heard, pinged = time.monotonic(), False
            confirmed += self._take(reply, deliver, dropped)
            read += 1
            if read % DISPATCH_BATCH == 0:
                # A backlog is read from the buffer without blocking: let the
                # streams drain their queues and the other requests run. The
                # confirmations of thousands of channels (a resubscribe) may
                # come on several connections at once: those wait for a timer.
                time.sleep(RECOVERY_PAUSE if confirmed else 0)
                confirmed = 0

    @staticmethod
    def _reply(conn: t.Any, refused: Callable[[int], None] | None) -> t.Any:
        try:
            return conn.read_response(push_request=True)
        except AskError as exc:  # and MovedError: the slot lives on another node
            if refused is None:
                raise
            refused(exc.slot_id)
            return None

    def _take(self, reply: t.Any, deliver: Deliver, dropped: Callable[[str], None] | None) -> bool:
        """Handle one reply; return whether it confirmed a subscribe."""
        if not isinstance(reply, list) or len(reply) < 3:
            return False  # PONG
        kind, name = as_text(reply[0]), self._name_of(reply[1])
        if kind == self._kinds[0]:
            item = self._announced(name, reply[2])
            if item is not None:
                deliver(name, *item)
        elif kind in self._kinds:
            with self.lock:
                moved = self._confirmed(name, subscribe=kind == self._kinds[1])
            if moved and dropped is not None:
                dropped(name)
        return kind == self._kinds[1]

    def _announced(self, name: str, payload: object) -> tuple[Key, ServerSentEvent] | None:
        """The announcement in ``payload``, or None if no publish made it (counted).

        An id far ahead of Redis' clock is trusted only once the channel's
        stream holds it: a forged one would move cursors past what is to come.

        :raises redis.RedisError: the stream could not be asked.
        """
        try:
            key, event = decode_announcement(as_text(payload))
        except (ValueError, KeyError, TypeError):
            key = None
        if key is not None:
            ms, at = self.clock
            if key[0] <= ms + (time.monotonic() - at) * 1000 + AHEAD:
                return key, event
            if self.source.holds(name, key):
                self.clock = (key[0], time.monotonic())  # Redis' clock runs ahead
                return key, event
        self.source.rejected_messages += 1
        log = logger.debug if self.source.rejected_messages > 1 else logger.warning
        log("Dropped a message on %s channel %r that no publish made.", self.backend, name)
        return None

    def _confirmed(self, name: str, *, subscribe: bool) -> bool:
        """Count Redis' confirmation of a command; return whether Redis dropped ``name``
        by itself (its cluster slot moved). The caller holds the lock."""
        counts = self._counts.get(name)
        if counts is None:
            return False
        moved = False
        if subscribe:
            counts.acked += 1
            waiting = counts.waiters
            counts.waiters = [(target, w) for target, w in waiting if target > counts.acked]
            for target, waiter in waiting:
                if target <= counts.acked:
                    waiter.confirm()
        elif counts.leaving:
            counts.leaving -= 1
        else:
            counts.on, moved = False, True
        if not (counts.on or counts.waiters or counts.leaving or counts.acked < counts.sent):
            del self._counts[name]  # nothing pending
        return moved
