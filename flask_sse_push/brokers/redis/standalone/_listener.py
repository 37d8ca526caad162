"""The Redis broker's per-process listener: one subscriber connection for every client.

Each process holds one pub/sub connection, read by one background thread (a
greenlet under gunicorn's gevent worker). Channels are reference-counted:
``SUBSCRIBE`` goes out for a channel's first local client and ``UNSUBSCRIBE``
after its last. Announcements fan out to the clients' queues. When the
connection breaks, the thread reconnects with backoff, resubscribes, and catches
every client up from the streams.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

import redis

from ....exceptions import BrokerError, SubscriptionClosed
from .._channels import Channel, ListenerBase, Waiter, confirm_waiters
from .._scripts import ZERO, as_text, optional_key

if t.TYPE_CHECKING:
    from .._scripts import Key
    from ._subscription import RedisSubscription
    from .broker import RedisBroker

logger = logging.getLogger("flask_sse_push")

#: The name the subscriber connection has in ``CLIENT LIST``.
SUBSCRIBER_NAME = "flask_sse_push:subscriber"

#: Messages the listener dispatches in a row before it lets other greenlets run.
DISPATCH_BATCH = 128

#: Channels named in one ``SUBSCRIBE`` while resubscribing, and read in one go by
#: the catch-up after it: large enough to be few round trips, small enough that
#: handling one batch never holds the worker for long.
SUBSCRIBE_BATCH = 500

#: Seconds added to the resubscribe deadline per channel, on top of a fixed part.
CONFIRM_ALLOWANCE = 0.002

#: Seconds the listener pauses between batches while it recovers. Not 0: gevent
#: runs up to 50 ``sleep(0)`` wake-ups in a row before it looks at its timers
#: and sockets again, so batches that yield with ``sleep(0)`` still add up to a
#: long stall; a timer lets the event loop go round between two batches.
RECOVERY_PAUSE = 0.001

_IDLE, _CONNECTING, _OPEN, _DOWN = "idle", "connecting", "open", "down"


class _Channel(Channel["RedisSubscription"]):
    """The listener's view of one channel.

    Redis confirms ``SUBSCRIBE`` commands in the order they were sent, so
    counting them tells which confirmation a waiter needs, even when the
    channel is dropped and wanted again before Redis has answered.
    """

    __slots__ = ("wanted", "sent", "acked", "inflight", "waiters")

    def __init__(self) -> None:
        super().__init__()
        self.waiters: list[tuple[int, Waiter]] = []
        self.new_connection()

    def new_connection(self) -> None:
        self.wanted = False  # the last command sent for it was SUBSCRIBE
        self.sent = 0  # SUBSCRIBE commands sent on this connection
        self.acked = 0  # ... and confirmed
        self.inflight = 0  # SUBSCRIBE and UNSUBSCRIBE commands not yet confirmed


class Listener(ListenerBase["RedisSubscription", _Channel]):
    """This process' one subscriber connection, and the thread that reads it.

    Whichever thread needs a ``SUBSCRIBE``, ``UNSUBSCRIBE`` or ``PING`` writes it,
    holding :attr:`lock`; only the listener thread reads.
    """

    #: Reconnection delays, in seconds (doubling, with jitter).
    backoff_min, backoff_max = 0.05, 2.0

    def __init__(self, broker: RedisBroker) -> None:
        super().__init__()
        self.broker = broker
        self.state = _IDLE
        self.connection = 0  # counts the connections opened
        # The newest id read here: anything published later has a greater id.
        self.seen: Key = ZERO
        self.error = "not connected yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: t.Any = None
        self._pool: t.Any = broker.pool
        self._prefix = broker.prefix + "channel:"
        # Subscriptions made before the first connection: they start where it does.
        self._joining: list[RedisSubscription] = []
        self._failures = 0  # failed attempts since the connection was last open
        # An open connection broke: the next one to open counts as a reconnect.
        self._lost = False
        # Channels resubscribed on this connection that Redis has not confirmed yet.
        self._unconfirmed: set[str] = set()
        # The channels that have waiters, by id(): failed when the connection breaks.
        self._awaited: dict[int, _Channel] = {}

    def _new_channel(self) -> _Channel:
        return _Channel()

    # -- called by request threads -------------------------------------------------

    def attach(self, sub: RedisSubscription) -> Waiter | None:
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
            sub.connection = self.connection
            if self.state == _CONNECTING:
                sub.connection += 1  # the one being opened
                self._joining.append(sub)
            fresh = []
            unconfirmed = []
            for name, channel in self._join(sub):
                if self.state == _OPEN and not channel.wanted:
                    fresh.append(name)
                    channel.wanted = True
                    channel.sent += 1
                    channel.inflight += 1
                if self.state == _CONNECTING or channel.acked < channel.sent:
                    unconfirmed.append(channel)
            waiter = None
            if unconfirmed:
                waiter = Waiter(len(unconfirmed))
                for channel in unconfirmed:
                    # While connecting, the connection's first SUBSCRIBE covers it.
                    channel.waiters.append((max(channel.sent, 1), waiter))
                    self._awaited[id(channel)] = channel
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
            gone = []
            for name, channel in self._leave(sub):
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
            if stop.wait(self._backoff(self._failures)):
                return

    def _serve(self, stop: threading.Event) -> None:
        conn = self._conn
        if conn is None:
            # The pool of the thread the listener runs in (see RedisBroker.client_here).
            self._pool = self.broker.client_here().connection_pool
            conn = self._conn = self._pool.get_connection()
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
        last = optional_key(conn.read_response(push_request=True))
        with self.lock:
            outage = self.state == _DOWN
            keys = list(self.channels)
        names: list[str] = []
        if outage:
            # attach() refuses while down and detach() only drops channels, so
            # the channels can be reset a batch at a time, letting others run.
            for start in range(0, len(keys), SUBSCRIBE_BATCH):
                with self.lock:
                    self._reset(keys[start : start + SUBSCRIBE_BATCH], names)
                time.sleep(RECOVERY_PAUSE)
        with self.lock:
            if stop.is_set():
                return
            if not outage:
                # The first connection: attach() adds channels until now.
                self._reset(list(self.channels), names)
            self.seen = max(self.seen, last or ZERO)
            self.connection += 1
            # Those that joined while connecting start where this connection does.
            for sub in self._joining:
                sub.last = max(sub.last, self.seen)
            self._joining.clear()
            # From here on a channel not yet resubscribed counts as unsubscribed,
            # so attach() and detach() may subscribe or drop it meanwhile.
            self.state = _OPEN
            self._unconfirmed = set()
            if self._lost:
                self._lost = False
                self.broker.reconnects += 1
        if self._failures:
            logger.info("Redis subscriber connection is back after %d attempts.", self._failures)
            self._failures = 0
        self._resubscribe(names, stop)
        # Messages wait until the catch-up has read what was missed: delivering
        # a newer one first would make the client skip the older ones.
        held: list[t.Any] = []
        # Redis confirms a few thousand channels a second even on a busy host;
        # the allowance grows with the work so that no channel count is too many.
        deadline = time.monotonic() + 2 * self.health_interval + len(names) * CONFIRM_ALLOWANCE
        read = 0
        while self._unconfirmed:
            if stop.is_set():
                return
            if time.monotonic() > deadline:
                raise redis.TimeoutError(
                    f"Redis did not confirm SUBSCRIBE for {len(self._unconfirmed)} of"
                    f" {len(names)} channels in time"
                )
            reply = self._read(conn, 0.5)
            if reply is not None and not self._control(reply):
                held.append(reply)
            read += 1
            if read % DISPATCH_BATCH == 0:
                time.sleep(RECOVERY_PAUSE)  # thousands of confirmations sit in the buffer
        self._catch_up(names, stop)
        for count, reply in enumerate(held, 1):
            self._dispatch(reply)
            if count % DISPATCH_BATCH == 0:
                time.sleep(RECOVERY_PAUSE)
        self._read_forever(conn, stop)

    def _reset(self, keys: list[str], names: list[str]) -> None:
        """Start ``keys`` afresh for a new connection; add those still wanted to ``names``.

        The caller holds the lock.
        """
        for name in keys:
            channel = self.channels.get(name)
            if channel is None:
                continue
            channel.new_connection()
            if channel.subs:
                names.append(name)
            else:
                del self.channels[name]

    def _resubscribe(self, names: list[str], stop: threading.Event) -> None:
        """Subscribe ``names`` again, a batch per command, letting other greenlets run."""
        for start in range(0, len(names), SUBSCRIBE_BATCH):
            with self.lock:
                if stop.is_set():
                    return
                batch = []
                for name in names[start : start + SUBSCRIBE_BATCH]:
                    channel = self.channels.get(name)
                    # Gone, or subscribed again by attach() since the reconnect.
                    if channel is None or not channel.subs or channel.wanted:
                        continue
                    batch.append(name)
                    channel.wanted = True
                    channel.sent += 1
                    channel.inflight += 1
                if batch:
                    self._send("SUBSCRIBE", batch)
                    self._unconfirmed.update(batch)
            time.sleep(RECOVERY_PAUSE)

    def _read(self, conn: t.Any, timeout: float) -> t.Any:
        if not conn.is_connected:
            raise redis.ConnectionError("the Redis subscriber connection was closed")
        if not conn.can_read(timeout=timeout):
            return None
        return conn.read_response(push_request=True)

    def _read_forever(self, conn: t.Any, stop: threading.Event) -> None:
        heard = time.monotonic()
        pinged = False
        read = 0
        while not stop.is_set():
            reply = self._read(conn, 1.0)
            now = time.monotonic()
            if reply is not None:
                heard, pinged = now, False
                if not self._control(reply):
                    self._dispatch(reply)
                read += 1
                if read % DISPATCH_BATCH == 0:
                    # A backlog (messages, or the confirmations of thousands of
                    # channels) is read from the buffer without blocking, so let
                    # the streams (or their consumers) drain their queues
                    # before they overflow, and the other requests run.
                    time.sleep(0)
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
        kind = as_text(reply[0])
        if kind == "message":
            return False
        if kind not in ("subscribe", "unsubscribe"):
            return True  # pong, in RESP2
        name = as_text(reply[1])[len(self._prefix) :]
        with self.lock:
            if kind == "subscribe":
                self._unconfirmed.discard(name)
            channel = self.channels.get(name)
            if channel is None:
                return True
            channel.inflight -= 1
            if kind == "subscribe":
                channel.acked += 1
                channel.waiters = confirm_waiters(channel.waiters, channel.acked)
                if not channel.waiters:
                    self._awaited.pop(id(channel), None)
            if not channel.subs and channel.inflight <= 0:
                del self.channels[name]
                self._awaited.pop(id(channel), None)
        return True

    def _dispatch(self, reply: t.Any) -> None:
        channel = self.channels.get(as_text(reply[1])[len(self._prefix) :])
        if channel is None or not channel.subs:
            return
        announced = self._announcement(reply[2], as_text(reply[1]))
        if announced is None:
            return
        key, event = announced
        self.seen = max(self.seen, key)
        for sub in channel.subs:
            if not sub.deliver(key, event):
                self.detach(sub)

    def _catch_up(self, names: list[str], stop: threading.Event) -> None:
        """Give subscriptions from earlier connections what was published meanwhile.

        Subscriptions are read a batch at a time (each one whole, since its
        cursor spans all its channels), so a worker with many channels neither
        sends Redis one huge script call nor stops its other greenlets for long.
        """
        subs: dict[int, RedisSubscription] = {}
        for start in range(0, len(names), SUBSCRIBE_BATCH):
            with self.lock:
                for name in names[start : start + SUBSCRIBE_BATCH]:
                    channel = self.channels.get(name)
                    for sub in channel.subs if channel is not None else ():
                        if sub.connection < self.connection:
                            subs[id(sub)] = sub
            time.sleep(RECOVERY_PAUSE)
        batch: list[RedisSubscription] = []
        firsts: dict[str, Key] = {}
        for sub in subs.values():
            batch.append(sub)
            for name in sub.channels:
                firsts[name] = min(firsts.get(name, sub.last), sub.last)
            if len(firsts) >= SUBSCRIBE_BATCH:
                self._catch_up_batch(batch, firsts)
                batch, firsts = [], {}
                if stop.is_set():
                    return
                time.sleep(RECOVERY_PAUSE)
        if batch:
            self._catch_up_batch(batch, firsts)

    def _catch_up_batch(self, subs: list[RedisSubscription], firsts: dict[str, Key]) -> None:
        snapshot = self.broker.read(list(firsts), firsts=firsts)
        for sub in subs:
            if not sub.catch_up(snapshot):
                self.detach(sub)

    def _mark_down(self, exc: BaseException) -> None:
        with self.lock:
            self.error = str(exc) or type(exc).__name__
            self._lost = self._lost or self.state == _OPEN
            self.state = _DOWN
            self._joining.clear()
            # Only the channels someone waits on: the next connection resets the
            # rest, and going over every channel here would stall the worker.
            for channel in self._awaited.values():
                for _, waiter in channel.waiters:
                    waiter.fail()
                channel.waiters = []
            self._awaited.clear()
            conn = self._conn
        if conn is not None:
            conn.disconnect()

    # -- shutdown --------------------------------------------------------------------

    def close(self) -> None:
        """Stop the thread, drop the connection and end every subscription."""
        with self.lock:
            self._stop.set()
            for channel in self.channels.values():
                for _, waiter in channel.waiters:
                    waiter.fail()
            self._awaited.clear()
            subs = self._leave_all()
            self.state = _IDLE
            self._lost = False
            conn, self._conn = self._conn, None
            thread, self._thread = self._thread, None
        for sub in subs:
            sub.finish(SubscriptionClosed("broker closed"))
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
