"""The Redis broker's per-process listener: one subscriber connection for every client.

Each process holds one pub/sub connection (:mod:`.._subscriber`), read by one
background thread (a greenlet under gunicorn's gevent worker). Channels are
reference-counted: ``SUBSCRIBE`` goes out for a channel's first local client and
``UNSUBSCRIBE`` after its last. Announcements fan out to the clients' queues.
When the connection breaks, the thread reconnects with backoff, resubscribes,
and catches every client up from the streams.
"""

from __future__ import annotations

import logging
import threading
import typing as t

import redis

from ....exceptions import BrokerError
from ..._replay import Spending, complete_part, mean_size, page_count
from .._channels import Channel, ListenerBase
from .._scripts import ZERO, as_text, optional_key
from .._subscriber import (
    BATCH,
    HEALTH_INTERVAL,
    RECOVERY_PAUSE,
    SUBSCRIBER_NAME,
    Subscriber,
    Waiter,
    close_all,
    confirm_deadline,
    handshake,
    paced,
    release,
    resubscribe,
    settle,
)

if t.TYPE_CHECKING:
    from ....event import ServerSentEvent
    from .._scripts import Entry, Key
    from .._subscriber import Item
    from ._subscription import RedisSubscription
    from .broker import RedisBroker

logger = logging.getLogger("flask_sse_push")

_IDLE, _CONNECTING, _OPEN, _DOWN = "idle", "connecting", "open", "down"


class Listener(ListenerBase["RedisSubscription", Channel["RedisSubscription"]]):
    """This process' one subscriber connection, and the thread that reads it."""

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
        self._subscriber = self._new_subscriber()
        # Subscriptions made before the first connection: they start where it does.
        self._joining: list[RedisSubscription] = []
        self._failures = 0  # failed attempts since the connection was last open
        # An open connection broke: the next one to open counts as a reconnect.
        self._lost = False

    def _new_channel(self) -> Channel[RedisSubscription]:
        return Channel()

    def _new_subscriber(self) -> Subscriber:
        prefix = self.broker.prefix + "channel:"
        return Subscriber(
            self.lock,
            self.broker,
            sharded=False,
            commands=lambda command, names: [(command, *[prefix + n for n in names])],
            name_of=lambda raw: as_text(raw)[len(prefix) :],
        )

    def _connection(
        self, name: str, channel: Channel[RedisSubscription], *, route: bool = False
    ) -> Subscriber:
        return self._subscriber

    # -- called by request threads -------------------------------------------------

    def attach(self, sub: RedisSubscription) -> Waiter:
        """Register ``sub``; the waiter is done when Redis confirmed its channels.

        :raises BrokerError: the connection is down and being re-established.
        """
        with self.lock:
            if self.state == _DOWN:
                raise BrokerError(
                    f"Redis at {self.broker.where()} is unreachable ({self.error}); the"
                    " broker keeps reconnecting. Check that redis-server is running."
                )
            if self.state == _IDLE:
                self._start()
            sub.last, sub.connection = self.seen, self.connection
            if self.state == _CONNECTING:
                sub.connection += 1  # the one being opened
                self._joining.append(sub)
            try:
                # While connecting, the connection's first SUBSCRIBE confirms them.
                return self._subscribe([name for name, _ in self._join(sub)])
            except redis.ConnectionError as exc:
                failure = exc
        self.detach(sub)
        raise BrokerError(
            f"Could not subscribe on Redis at {self.broker.where()}: {failure}. The broker"
            " reconnects by itself; check that redis-server is running."
        ) from failure

    def _start(self) -> None:
        """Start the thread; the caller holds the lock."""
        self.state, self._subscriber = _CONNECTING, self._new_subscriber()
        self._stop = stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(stop,), daemon=True, name="flask_sse_push-redis"
        )
        self._thread.start()

    # -- the listener thread ---------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._serve(stop)
            except Exception as exc:  # whatever broke, the cure is to reconnect
                if stop.is_set():
                    return
                # One warning per outage, not one per attempt.
                log = logger.debug if self._failures else logger.warning
                log("Redis subscriber connection lost (%s); reconnecting.", exc)
                self._failures += 1
                self._mark_down(exc)
                stop.wait(self._backoff(self._failures))

    def _serve(self, stop: threading.Event) -> None:
        names = self._open(*self._connect(), stop)
        _, waiters = resubscribe(self, names, self.channels.__contains__)
        # Messages wait until the catch-up has read what was missed: delivering
        # a newer one first would make the client skip the older ones.
        held: list[Item] = []
        self._subscriber.read(
            lambda: stop.is_set() or all(w.done.is_set() for w in waiters),
            lambda *item: held.append(item),
            deadline=confirm_deadline(2 * HEALTH_INTERVAL, len(names)),
        )
        if stop.is_set():
            return
        self._catch_up(names, stop)
        release(held, self._dispatch)
        self._subscriber.read(stop.is_set, self._dispatch)

    def _connect(self) -> tuple[Key | None, tuple[int, float]]:
        """Connect; name the connection for CLIENT LIST, and return where ids stand."""
        if self._conn is None:
            # The pool of the thread the listener runs in (see RedisBroker.client_here).
            self._pool = self.broker.client_here().connection_pool
            self._conn = self._pool.get_connection()
        conn = self._conn
        if not conn.is_connected:
            conn.connect()
        # Not subscribed yet, so plain commands work.
        clock = ("HGET", self.broker.prefix + "clock", "last")
        replies, now = handshake(conn, ("CLIENT", "SETNAME", SUBSCRIBER_NAME), clock)
        return optional_key(replies[1]), now

    def _open(self, last: Key | None, clock: tuple[int, float], stop: threading.Event) -> list[str]:
        """Let attach() and detach() use the connection; return the channels to subscribe."""
        with self.lock:
            if stop.is_set():
                return []
            # From here on a channel not yet resubscribed counts as unsubscribed,
            # so attach() and detach() may subscribe or drop it meanwhile.
            self._subscriber.opened(self._conn, clock)
            self.seen = max(self.seen, last or ZERO)
            self.connection += 1
            # Those that joined while connecting start where this connection does.
            for sub in self._joining:
                sub.last = max(sub.last, self.seen)
            self._joining.clear()
            self.state = _OPEN
            self.broker.reconnects += self._lost
            self._lost = False
        if self._failures:
            logger.info("Redis subscriber connection is back after %d attempts.", self._failures)
            self._failures = 0
        return list(self.channels)

    def _dispatch(self, name: str, key: Key, event: ServerSentEvent) -> None:
        channel = self.channels.get(name)
        if channel is not None:
            self.seen = max(self.seen, key)
            settle(self, channel.subs, lambda sub: sub.deliver(name, key, event))

    def _catch_up(self, names: list[str], stop: threading.Event) -> None:
        """Give subscriptions from earlier connections what was published meanwhile.

        Subscriptions are read a batch at a time (each one whole, since its
        cursor spans all its channels), so a worker with many channels neither
        sends Redis one huge script call nor stops its other greenlets for long.
        """
        subs: dict[int, RedisSubscription] = {}
        for batch in paced(names):
            with self.lock:
                for channel in filter(None, map(self.channels.get, batch)):
                    subs.update((id(s), s) for s in channel.subs if s.connection < self.connection)
        readers: list[RedisSubscription] = []
        wanted: set[str] = set()
        for count, sub in enumerate(subs.values(), 1):
            readers.append(sub)
            wanted.update(sub.channels)
            if len(wanted) >= BATCH or count == len(subs):
                self._catch_up_batch(readers, stop)
                readers, wanted = [], set()
                if stop.is_set():
                    return

    def _catch_up_batch(self, subs: list[RedisSubscription], stop: threading.Event) -> None:
        """Catch ``subs`` up in pages, as a resume is read (:mod:`..._replay`): each
        page bounded, and each client given at most its replay budget."""
        budget = self.broker.replay_budget
        spendings = {id(sub): Spending(budget) for sub in subs}
        since, size = ZERO, None
        while subs and not stop.wait(RECOVERY_PAUSE):
            firsts: dict[str, Key] = {}
            for sub in subs:
                start = max(sub.last, since)
                firsts.update((n, min(firsts.get(n, start), start)) for n in sub.channels)
            names, count = list(firsts), page_count(len(firsts), budget, size)
            snapshot = self.broker.read(names, firsts=firsts, count=count)
            pages = [[(e.key, e) for e in snapshot.entries[name]] for name in names]
            complete, bound = complete_part(pages, count)
            entries: dict[str, list[Entry]] = {}
            for _, index, entry in complete:
                entries.setdefault(names[index], []).append(entry)
            page = snapshot._replace(entries=entries)
            steps = [(sub, sub.catch_up(page, since, spendings[id(sub)])) for sub in subs]
            for sub in [sub for sub, more in steps if more is False]:
                self.detach(sub)  # it overflowed
            if bound is None:
                return
            subs = [sub for sub, more in steps if more]
            since, size = bound, mean_size([entry.event for _, _, entry in complete])

    def _mark_down(self, exc: BaseException) -> None:
        with self.lock:
            self.error = str(exc) or type(exc).__name__
            self._lost = self._lost or self.state == _OPEN
            self.state = _DOWN
            self._joining.clear()
            self._subscriber.lost()
        if self._conn is not None:
            self._conn.disconnect()

    def close(self) -> None:
        """Stop the thread, drop the connection and end every subscription."""
        with self.lock:
            self._stop.set()
            self.state, self._lost = _IDLE, False
            conn, self._conn = self._conn, None
            thread, self._thread = self._thread, None
        close_all(self, [self._subscriber])
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
