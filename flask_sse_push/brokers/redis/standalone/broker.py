"""The Redis broker: fan-out across workers and hosts, history in Redis Streams.

What it keeps in Redis, for the prefix ``P`` (default ``sse:``) and a channel ``C``:

- ``P`` + ``stream:C``: the channel's events, trimmed with ``XADD ... MAXLEN ~ history``.
- ``P`` + ``channel:C``: the pub/sub channel announcing each new entry, with the
  event in the message, so listeners need no second round trip.
- ``P`` + ``ids:C``: user-supplied event id -> entry id, so such ids resume too.
- ``P`` + ``clock``: the newest entry id under the prefix (``last``), the first
  one issued since the data was created (``since``), and each channel's newest id
  (under its stream's key), which outlives a stream deleted on its own.

Entry ids are the SSE ids. A Lua script issues them from the one clock, so they
grow across *all* channels in publish order, and one ``Last-Event-ID`` resumes a
multi-channel subscription with ``> cursor`` on every stream. (Redis' own ``*``
ids grow per stream only: a quiet channel could get an id below a busy one's.)
The same script announces the entry, so storing and announcing are atomic.

Each process holds one subscriber connection, read by one background thread (a
greenlet under gunicorn's gevent worker), that fans out to per-client queues.

The pieces live in private modules: the scripts and id handling in
:mod:`.._scripts`, the listener in :mod:`._listener`, and a client's
queue in :mod:`._subscription`. This module is the public one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import typing as t

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ....exceptions import BrokerError
from ....servers import os_lock, os_thread_local, thread_bound_sockets
from ....validation import check_channel_name
from ..._replay import (
    BUDGET_REASON,
    ReplayBudget,
    Spending,
    complete_part,
    mean_size,
    page_count,
)
from ...base import Broker, Subscription, reset_event
from ...records import WorkerRecords
from .._acl import RIGHTS_SCRIPT, refused_message, rights_args
from .._common import (
    ProcessListener,
    check_names,
    check_sizes,
    open_subscription,
    publish_args,
)
from .._records import RECORDS_TAG, RedisWorkerRecords
from .._scripts import (
    PUBLISH_SCRIPT,
    READ_SCRIPT,
    Snapshot,
    as_text,
    decode_entry,
    decode_holes,
    entry_fields,
    format_id,
    optional_key,
    parse_id,
)
from .._subscriber import SUBSCRIBER_NAME as SUBSCRIBER_NAME  # public: CLIENT LIST shows it
from ._listener import Listener
from ._subscription import RedisSubscription

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from ....event import ServerSentEvent
    from .._scripts import Key

__all__ = ["RedisBroker"]


#: The command rights (Redis ACL syntax) :class:`RedisBroker` needs, besides
#: access to the keys and channels under its prefix.
ACL_COMMANDS = (
    "+ping +eval +evalsha +time +hget +hmget +hset +hlen +hgetall +hdel +xadd +xrange"
    " +xrevrange +publish +subscribe +unsubscribe +client|setname"
)


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
    :param replay_budget: how much one resume may replay; it is read in pages
        of a few hundred entries, and past the budget the client gets what
        fits, then a ``reset`` (reason ``"budget"``).

    :attr:`reconnects` counts how often this process' subscriber connection
    broke and was opened again; :meth:`ping` checks that Redis answers.

    :meth:`publish`, :meth:`ping` and :meth:`cursor` may be called from any
    thread or greenlet. Under gevent's monkey-patching each OS thread gets its
    own connection pool (:meth:`client_here`), since a gevent socket works only
    in the thread that made it. A publish is never retried, so an event is sent
    at most once; whatever fails is raised as :class:`~flask_sse_push.BrokerError`.

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
        replay_budget: ReplayBudget | None = None,
    ) -> None:
        check_sizes("RedisBroker", history, queue_size)
        self.replay_budget = (replay_budget or ReplayBudget()).check()
        self.client = client
        self.pool = client.connection_pool
        # Under gevent, the OS thread that first uses the broker uses ``client``;
        # every other OS thread gets a client with a pool of its own, since a
        # connection made or used in one thread must never reach another.
        self._home: int | None = None
        self._home_lock = os_lock()
        self._threads = os_thread_local()
        self._generation = 0  # close() drops the other threads' clients
        self.history = history
        self.queue_size = queue_size
        self.prefix = prefix
        self.subscribe_timeout = subscribe_timeout
        self._publish_script = client.register_script(PUBLISH_SCRIPT)
        self._read_script = client.register_script(READ_SCRIPT)
        self._listeners = ProcessListener(lambda: Listener(self))
        #: Times this process lost its subscriber connection and opened it again.
        self.reconnects = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        history: int = 1000,
        queue_size: int = 1000,
        prefix: str = "sse:",
        max_connections: int = 4,
        connect_timeout: float = 3.0,
        socket_timeout: float = 5.0,
        replay_budget: ReplayBudget | None = None,
    ) -> RedisBroker:
        """Connect lazily to the Redis at ``url`` (``redis://host:port/db``).

        No connection opens until the first publish or subscribe, so the broker
        can be made before a server forks its workers.

        :param max_connections: connections this process may open per OS thread
            that uses the broker, the subscriber connection included; more
            callers in one thread wait for a free one.
        :param connect_timeout: seconds to wait for a TCP connection to Redis
            (each of up to three attempts), so a host that drops packets makes
            :meth:`publish` and :meth:`ping` raise :class:`~flask_sse_push.BrokerError`
            instead of hanging.
        :param socket_timeout: seconds to wait for Redis to answer a command.
        :param replay_budget: see the class.
        """
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=20,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            # Fail fast when Redis is down: the callers retry on their own terms.
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        )
        return cls(
            redis.Redis(connection_pool=pool),
            history=history,
            queue_size=queue_size,
            prefix=prefix,
            replay_budget=replay_budget,
        )

    def client_here(self) -> redis.Redis:  # type: ignore[type-arg, unused-ignore]
        """The client for the calling OS thread: ``client``, or one made for the thread.

        Outside gevent every thread shares ``client`` (redis-py's pools are
        thread-safe). Under gevent's monkey-patching, sockets are bound to the
        hub of the OS thread that made them, so each OS thread but the first one
        gets a client with a pool of its own, made like ``client``'s pool.
        """
        get_ident = thread_bound_sockets()
        if get_ident is None:
            return self.client
        ident = get_ident()
        if self._home is None:
            with self._home_lock:
                if self._home is None:
                    self._home = ident
        if ident == self._home:
            return self.client
        local = self._threads
        made = getattr(local, "made", None)
        if made is None or made[0] != self._generation or made[1] != os.getpid():
            pool = self.pool
            # The same settings, less the state redis-py binds to a pool.
            kwargs = {
                key: value
                for key, value in pool.connection_kwargs.items()
                if key != "maint_notifications_pool_handler"
            }
            if isinstance(pool, redis.BlockingConnectionPool):
                kwargs["timeout"] = pool.timeout
            thread_pool = type(pool)(
                connection_class=pool.connection_class,
                max_connections=pool.max_connections,
                **kwargs,
            )
            client = redis.Redis(connection_pool=thread_pool)
            made = local.made = (self._generation, os.getpid(), client)
        thread_client: redis.Redis = made[2]  # type: ignore[type-arg, unused-ignore]
        return thread_client

    def _run_script(self, action: str, script: t.Any, keys: list[str], args: list[t.Any]) -> t.Any:
        """Run a Lua script once on the calling thread's pool; any failure is a BrokerError.

        No retry: a script whose reply was lost may have run, and running a
        publish twice would send its event twice. A connection that failed in
        any way is closed before it goes back to the pool, so the pool never
        hands out a broken one.
        """
        pool = self.client_here().connection_pool
        try:
            # Some redis-py releases leave Connection's methods untyped.
            conn: t.Any = pool.get_connection()
        except Exception as exc:
            raise self._error(action, exc) from exc
        done = False
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                reply = conn.read_response()
            except redis.exceptions.NoScriptError:
                # NOSCRIPT means nothing ran: loading it by EVAL is safe.
                conn.send_command("EVAL", script.script, len(keys), *keys, *args)
                reply = conn.read_response()
            done = True
            return reply
        except Exception as exc:
            raise self._error(action, exc) from exc
        finally:
            if not done:
                with contextlib.suppress(Exception):
                    conn.disconnect()
            pool.release(conn)

    def where(self) -> str:
        """Where Redis is, for messages: ``host:port`` or ``unix:path``."""
        kwargs = self.pool.connection_kwargs
        if "path" in kwargs:
            return f"unix:{kwargs['path']}"
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    def _error(self, action: str, exc: Exception) -> BrokerError:
        return BrokerError(
            f"Could not {action} on Redis at {self.where()}: {str(exc).rstrip('.')}. Check that"
            " redis-server is running and that SSE_PUSH_BROKER_URL points at it."
        )

    def ping(self, *, timeout: float = 2.0) -> None:
        """Send ``PING`` on a pooled connection and wait ``timeout`` seconds for the reply.

        It reuses an open pooled connection, so a health check adds no
        connection to Redis. If none is open, opening one follows the pool's
        connect timeout, and if all are busy, the pool's wait.

        :raises BrokerError: Redis could not be reached or did not answer in time.

        .. versionadded:: 0.1
        """
        pool = self.client_here().connection_pool
        try:
            # Some redis-py releases leave Connection's methods untyped.
            conn: t.Any = pool.get_connection()
        except Exception as exc:
            raise self._error("run PING", exc) from exc
        answered = False
        try:
            conn.send_command("PING", check_health=False)
            if not conn.can_read(timeout=timeout):
                raise redis.TimeoutError(f"no reply to PING within {timeout} s")
            reply = as_text(conn.read_response())
            if reply != "PONG":
                raise redis.ResponseError(f"unexpected reply to PING: {reply!r}")
            answered = True
        except Exception as exc:
            raise self._error("run PING", exc) from exc
        finally:
            if not answered:
                # A reply still on its way would be read by the connection's next user.
                with contextlib.suppress(Exception):
                    conn.disconnect()
            pool.release(conn)

    def needed_commands(self) -> list[tuple[str, ...]]:
        """Every command the broker runs, with the keys and channels of a channel
        ``default``: what its Redis user must be allowed (see :meth:`check`)."""
        clock = self.prefix + "clock"
        stream, ids = self._key("stream", "default"), self._key("ids", "default")
        channel = self._key("channel", "default")
        return [
            ("PING",),
            ("EVAL", "return 0", "0"),
            ("EVALSHA", "0" * 40, "0"),
            ("TIME",),
            ("HGET", clock, "last"),
            ("HMGET", clock, "last", "since"),
            ("HSET", clock, "last", "0-1", "since", "0-1"),
            ("XADD", stream, "MAXLEN", "~", "1", "0-1", "prev", "0-0"),
            ("XRANGE", stream, "-", "+"),
            ("XREVRANGE", stream, "+", "-", "COUNT", "1"),
            ("HGET", ids, "id"),
            ("HSET", ids, "id", "0-1"),
            ("HLEN", ids),
            ("HGETALL", ids),
            ("HDEL", ids, "id"),
            ("PUBLISH", channel, "0-1"),
            ("CLIENT", "SETNAME", SUBSCRIBER_NAME),
            ("SUBSCRIBE", channel),
            ("UNSUBSCRIBE", channel),
        ]

    def check(self) -> None:
        """:meth:`ping`, then ask Redis whether this connection's user may run
        every command the broker needs (:meth:`needed_commands`), with
        ``redis.acl_check_cmd``: nothing is written or published. Before Redis
        7.0 only :meth:`ping` is done.

        :raises BrokerError: Redis cannot be reached, or its user lacks ACL
            rights; the message names the commands refused and the ``ACL
            SETUSER`` that grants them.

        .. versionadded:: 0.1
        """
        self.ping()
        try:
            refused = self.client_here().eval(
                RIGHTS_SCRIPT, 0, *rights_args(self.needed_commands())
            )
        except redis.exceptions.NoPermissionError:
            refused = [b"EVAL"]
        except Exception as exc:
            raise self._error("check the ACL rights", exc) from exc
        if refused:
            grant = (
                f"ACL SETUSER <user> resetkeys ~{self.prefix}* resetchannels &{self.prefix}*"
                f" {ACL_COMMANDS}"
            )
            names = [as_text(command) for command in refused]
            raise BrokerError(refused_message(self.where(), names, grant))

    def _key(self, kind: str, channel: str) -> str:
        return f"{self.prefix}{kind}:{channel}"

    def holds(self, channel: str, key: Key) -> bool:
        """Whether ``channel``'s stream holds the entry ``key`` (an announcement's check).

        :raises redis.RedisError: Redis did not answer.
        """
        entry_id = format_id(key)
        found = self.client_here().xrange(self._key("stream", channel), entry_id, entry_id, count=1)
        return bool(found)

    def publish(self, channel: str, event: ServerSentEvent) -> str:
        return self.publish_entry(channel, event)[0]

    def publish_entry(self, channel: str, event: ServerSentEvent) -> tuple[str, str, str]:
        """Publish like :meth:`publish`; return the SSE id, the entry id, and the
        channel's entry id before this one (``"0-0"`` if none), read atomically.

        The last two are what a GRIP proxy orders a channel's events by
        (see ``flask_sse_push.grip``).
        """
        check_channel_name(channel)
        message, fields = entry_fields(event)
        keys = [self._key("stream", channel), self.prefix + "clock", self._key("ids", channel)]
        args = publish_args(self._key("channel", channel), self.history, message, event, fields)
        reply = self._run_script("publish", self._publish_script, keys, args)
        entry_id, prev = as_text(reply[0]), as_text(reply[1])
        return (event.id if event.id is not None else entry_id), entry_id, prev

    def read(
        self,
        channels: list[str],
        *,
        firsts: dict[str, Key] | None = None,
        user_id: str | None = None,
        count: int | None = None,
    ) -> Snapshot:
        """Read the clock and, atomically, the entries after ``firsts`` (exclusive).

        If ``user_id`` is one of the channels' user-supplied ids, the entries
        after its event are read instead.

        :param count: the most entries to read per channel; ``None``: all.
        """
        firsts = firsts or {}
        keys = [
            self.prefix + "clock",
            *[self._key("stream", name) for name in channels],
            *[self._key("ids", name) for name in channels],
        ]
        starts = []
        for name in channels:
            first = firsts.get(name)
            starts.append("" if first is None else format_id((first[0], first[1] + 1)))
        args = [
            len(channels),
            "0" if user_id is None else "1",
            user_id or "",
            "" if count is None else count,
            *starts,
        ]
        raw = self._run_script("read the history", self._read_script, keys, args)
        entries = {
            name: [decode_entry(item) for item in raw[4 + i] or ()]
            for i, name in enumerate(channels)
        }
        n = len(channels)
        recorded = {name: optional_key(raw[4 + n + i]) for i, name in enumerate(channels)}
        return Snapshot(
            optional_key(raw[0]),
            optional_key(raw[1]),
            optional_key(raw[2]),
            entries,
            decode_holes(raw[3]),
            {name: key for name, key in recorded.items() if key is not None},
        )

    def subscribe(
        self, channels: Sequence[str], *, last_event_id: str | None = None
    ) -> Subscription:
        names = tuple(dict.fromkeys(check_channel_name(name) for name in channels))
        listener = self._listeners.get()
        sub = RedisSubscription(listener, check_names(names), self.queue_size)
        start = functools.partial(self._hand_over, sub, last_event_id)
        return open_subscription(listener, sub, start, self.subscribe_timeout, self._unconfirmed)

    def _unconfirmed(self, error: str) -> BrokerError:
        return BrokerError(
            f"Redis at {self.where()} did not confirm the subscription ({error})."
            " Check that redis-server is running."
        )

    def _hand_over(self, sub: RedisSubscription, last_event_id: str | None) -> bool:
        """Replay after ``last_event_id`` into ``sub``, then switch it to live events.

        The replay is read in pages (see :mod:`._replay`), each one atomic, and
        each checked again: a restart or a trim between two pages is a
        ``reset`` too. Live events published meanwhile wait in ``sub``, which
        drops those the replay covers.
        """
        names = list(sub.channels)
        if last_event_id is None:
            sub.start_id = format_id(sub.last)
            return sub.go_live([], sub.last)  # attach() set sub.last
        cursor = parse_id(last_event_id)
        count = page_count(len(names), self.replay_budget)
        firsts = dict.fromkeys(names, cursor) if cursor is not None else None
        snapshot = self.read(names, firsts=firsts, user_id=last_event_id, count=count)
        if snapshot.found is not None:
            cursor = snapshot.found
        spending = Spending(self.replay_budget)
        backlog: list[ServerSentEvent] = []
        while True:
            head = snapshot.head
            if cursor is None or not snapshot.known(cursor, names):
                reason = "unknown"
            elif snapshot.gap_after(cursor, names):
                reason = "expired"
            else:
                pages = [
                    [(e.key, e.event) for e in snapshot.entries.get(name, ()) if e.key > cursor]
                    for name in names
                ]
                complete, bound = complete_part(pages, count)
                for _, _, event in complete:
                    if not spending.take(event):
                        reason = BUDGET_REASON
                        break
                    backlog.append(event)
                else:
                    if bound is None:
                        return sub.go_live(backlog, head)
                    cursor = bound
                    firsts = dict.fromkeys(names, cursor)
                    size = mean_size([event for _, _, event in complete])
                    count = page_count(len(names), self.replay_budget, size)
                    snapshot = self.read(names, firsts=firsts, count=count)
                    continue
            backlog.append(reset_event(last_event_id, format_id(head), reason))
            return sub.go_live(backlog, head)

    def cursor(self, channels: Sequence[str]) -> str:
        try:
            last = self.client_here().hget(self.prefix + "clock", "last")
        except Exception as exc:
            raise self._error("read the cursor", exc) from exc
        return "0-0" if last is None else as_text(last)

    def worker_records(self) -> WorkerRecords:
        return RedisWorkerRecords(
            lambda: contextlib.nullcontext(self.client_here()), f"{self.prefix}{{{RECORDS_TAG}}}"
        )

    def subscriber_count(self) -> int:
        return self._listeners.count()

    def close(self) -> None:
        """Stop the listener, end open subscriptions and close the pool's connections."""
        self._listeners.close()
        self.pool.disconnect()
        # Other threads' pools are theirs to close: they get new ones.
        self._generation += 1
