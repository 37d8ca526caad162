"""The Redis Cluster broker: history and fan-out spread over the cluster's shards.

What it keeps, for the prefix ``P`` (default ``sse:``) and a channel ``C``:

- ``P{C}:stream``: the channel's events, trimmed with ``XADD ... MAXLEN ~ history``;
- ``P{C}:ids``: user-supplied event id -> entry id, so such ids resume too;
- ``P{C}``: the sharded pub/sub channel (``SPUBLISH``) announcing each entry.

``{C}`` is a hash tag, so the three share one slot: a publish is one script on
the shard that owns the channel, and publishes of different channels spread
over the shards. Ids and cursors are described in :mod:`._cursor`, the
per-shard subscriber connections in :mod:`._listener`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import typing as t
from urllib.parse import unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from ....exceptions import BrokerError
from ....validation import check_channel_name
from ..._replay import ReplayBudget
from ...base import Broker, Subscription
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
    ZERO,
    as_text,
    decode_entry,
    entry_fields,
    format_id,
    optional_key,
)
from .._subscriber import SUBSCRIBER_NAME
from ._cursor import ChannelRead, restart_record, wire_id
from ._listener import ClusterListener
from ._replay import hand_over
from ._scripts import PUBLISH_SCRIPT, READ_SCRIPT, clock_key, keys
from ._subscription import ClusterSubscription

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from ....event import ServerSentEvent
    from .._scripts import Key

__all__ = ["ACL_COMMANDS", "SCHEMES", "RedisClusterBroker"]

#: The command rights (Redis ACL syntax) :class:`RedisClusterBroker` needs on
#: every node, besides access to the keys and channels under its prefix.
ACL_COMMANDS = (
    "+ping +cluster|slots +command +eval +evalsha +script|load +time +hget +hmget +hset +hlen"
    " +hgetall +hdel +xadd +xrange +xrevrange +spublish +ssubscribe +sunsubscribe"
    " +client|setname"
)

#: What the cluster client raises: redis-py's errors, socket errors, and its own
#: cluster errors, which do not derive from RedisError.
ERRORS = (redis.RedisError, OSError, RedisClusterException)

#: URL schemes that name a Redis Cluster.
SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, t.Any]]:
    """Split ``redis+cluster://[user:password@]host:port[,host:port...]`` into seeds and options.

    :raises ValueError: the URL is not of that form, with what to write instead.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"{url!r} is not a redis+cluster://host:port URL.")
    options: dict[str, t.Any] = {"ssl": scheme == "rediss+cluster"}
    rest = rest.split("/", 1)[0].split("?", 1)[0]
    auth, at, hosts = rest.rpartition("@")
    if at:
        user, colon, password = auth.partition(":")
        if colon:
            options["username"] = unquote(user) or None
            options["password"] = unquote(password)
        else:
            options["password"] = unquote(user)
    seeds = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(
                f"Redis Cluster URL {url!r}: write each seed node as host:port,"
                " for example redis+cluster://10.0.0.1:7000,10.0.0.2:7000"
            )
        seeds.append((host.strip("[]"), int(port)))
    return seeds, options


class RedisClusterBroker(Broker):
    """Fan-out through a Redis Cluster (7.0 or newer), with sharded pub/sub.

    Each channel lives on the shard that owns its hash slot: its history, its
    user-id index and its pub/sub traffic. Each process opens one subscriber
    connection per shard it needs, plus the cluster client's pooled
    connections for publishing and resuming.

    A stream of one channel gets the entry ids as SSE ids, as with
    :class:`~flask_sse_push.brokers.redis.RedisBroker`. A stream of several
    channels gets a composite cursor as SSE id, a position per channel (see
    :mod:`flask_sse_push.brokers.redis.cluster._cursor`), so it resumes exactly on
    any worker even when the shards' clocks disagree. :meth:`publish` still
    returns the entry id (or the user-supplied one).

    When a shard fails over or a slot moves, the affected channels are
    subscribed where they live now and their clients catch up from the
    streams, or get a ``reset`` for what the cluster lost.

    :param client: the cluster client, or a function that makes one: it is then
        called on first use in each process, so the broker can be made before
        a server forks its workers.
    :param history: events kept per channel.
    :param queue_size: events a client may fall behind by before it is dropped.
    :param prefix: the start of every key and channel name; no braces.
    :param subscribe_timeout: seconds to wait for the shards to confirm.
    :param socket_timeout: seconds to connect to a node and to wait for a reply.
    :param max_connections: commands in flight at once in this process, so
        pooled connections per node; more callers wait up to 20 s.
    :param replay_budget: how much one resume may replay; each channel is read
        in pages, and past the budget the client gets what fits, then a
        ``reset`` (reason ``"budget"``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: RedisCluster | Callable[[], RedisCluster],
        *,
        history: int = 1000,
        queue_size: int = 1000,
        prefix: str = "sse:",
        subscribe_timeout: float = 10.0,
        socket_timeout: float = 5.0,
        connection_kwargs: Mapping[str, t.Any] | None = None,
        max_connections: int = 4,
        replay_budget: ReplayBudget | None = None,
    ) -> None:
        check_sizes("RedisClusterBroker", history, queue_size)
        self.replay_budget = (replay_budget or ReplayBudget()).check()
        if "{" in prefix or "}" in prefix:
            raise ValueError(
                f"SSE_PUSH_REDIS_PREFIX {prefix!r} contains a brace; with Redis Cluster the"
                " broker puts each channel in braces (a hash tag), so the prefix must have none."
            )
        self._factory = client if callable(client) else None
        self._given = None if callable(client) else client
        self._locals: dict[int, _Local] = {}
        self._locals_pid = os.getpid()
        self.max_connections = max_connections
        self.history = history
        self.queue_size = queue_size
        self.prefix = prefix
        self.subscribe_timeout = subscribe_timeout
        self.socket_timeout = socket_timeout
        self.connection_kwargs = dict(connection_kwargs or {})
        self._listeners = ProcessListener(lambda: ClusterListener(self))
        self.reconnects = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        history: int = 1000,
        queue_size: int = 1000,
        prefix: str = "sse:",
        socket_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        max_connections: int = 4,
        replay_budget: ReplayBudget | None = None,
    ) -> RedisClusterBroker:
        """Connect lazily to the cluster at ``url``: ``redis+cluster://host:port[,host:port...]``.

        Any node will do as a seed; the others are discovered. ``rediss+cluster://``
        uses TLS, and ``user:password@`` before the hosts authenticates.
        ``connect_timeout`` (seconds) bounds connecting to a node and
        ``socket_timeout`` every command, so an unreachable node cannot hang
        :meth:`publish`. ``max_connections`` bounds
        the pooled connections to each node, per process; more callers wait
        for a free one. The subscriber connections (one per shard) come on top.

        :raises ValueError: the URL is malformed.
        """
        seeds, options = parse_cluster_url(url)
        node: t.Any = ClusterNode  # some redis-py releases leave it untyped

        def connect() -> RedisCluster:
            return RedisCluster(
                startup_nodes=[node(host, port) for host, port in seeds],
                socket_connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
                **options,
            )

        subscriber_options = {k: v for k, v in options.items() if k != "ssl" and v is not None}
        broker = cls(
            connect,
            history=history,
            queue_size=queue_size,
            prefix=prefix,
            socket_timeout=socket_timeout,
            connection_kwargs=subscriber_options,
            max_connections=max_connections,
            replay_budget=replay_budget,
        )
        broker.seeds = ",".join(f"{host}:{port}" for host, port in seeds)
        return broker

    #: The seed nodes, for messages (set by :meth:`from_url`).
    seeds = ""

    @property
    def client(self) -> RedisCluster:
        """The cluster client of this process and OS thread, made on first use.

        Each OS thread gets its own client and pools: a connection made under
        one thread's event loop (gevent's hub) cannot be used under another's.
        Greenlets of one thread share it.

        :raises BrokerError: no seed node answered.
        """
        return self._local().client

    def _local(self) -> _Local:
        pid = os.getpid()
        if self._locals_pid != pid:
            # After a fork the parent's connections are not ours.
            self._locals, self._locals_pid = {}, pid
        thread = threading.get_native_id()
        local = self._locals.get(thread)
        if local is None:
            if self._factory is None:
                if self._given is None:
                    raise BrokerError("RedisClusterBroker was given a client of another process")
                client = self._given
            else:
                try:
                    client = self._factory()
                except ERRORS as exc:
                    raise self._error("read the cluster's topology", exc) from exc
            # setdefault: two greenlets racing here keep one client, and the
            # other closes the connections its topology read opened.
            local = self._locals.setdefault(thread, _Local(client, self.max_connections))
            if local.client is not client and self._factory is not None:
                client.close()
        return local

    @contextlib.contextmanager
    def _slot(self, action: str) -> Iterator[_Local]:
        local = self._local()
        if not local.slots.acquire(timeout=20):
            raise BrokerError(
                f"Could not {action}: all {self.where()} connections stayed busy for 20 s."
            )
        try:
            yield local
        finally:
            local.slots.release()

    def where(self) -> str:
        """The seed nodes, for messages."""
        if self.seeds:
            return self.seeds
        client = self._given
        return "?" if client is None else ",".join(n.name for n in client.startup_nodes)

    def _error(self, action: str, exc: Exception) -> BrokerError:
        return BrokerError(
            f"Could not {action} on Redis Cluster {self.where()}: {str(exc).rstrip('.')}."
            " Check that the cluster is up and that SSE_PUSH_BROKER_URL names its nodes."
        )

    # -- topology --------------------------------------------------------------------

    def owner(self, channel: str) -> tuple[str, int]:
        """``(host, port)`` of the master that serves ``channel`` now, as the client knows it."""
        slot = key_slot(keys(self.prefix, channel)[2].encode())
        node = self.client.nodes_manager.get_node_from_slot(slot)
        return node.host, node.port

    def holds(self, channel: str, key: Key) -> bool:
        """Whether ``channel``'s stream holds the entry ``key`` (an announcement's check).

        :raises redis.RedisError: the cluster did not answer.
        """
        entry_id = format_id(key)
        with self._slot("check an announcement") as local:
            found = local.client.xrange(keys(self.prefix, channel)[0], entry_id, entry_id, count=1)
        return bool(found)

    def refresh_topology(self) -> None:
        """Read the slot map again (after a failover or a slot migration)."""
        self.client.nodes_manager.initialize()

    # -- publishing and reading ------------------------------------------------------

    def publish(self, channel: str, event: ServerSentEvent) -> str:
        check_channel_name(channel)
        message, fields = entry_fields(event)
        stream, ids, pubsub = keys(self.prefix, channel)
        args = publish_args(pubsub, self.history, message, event, fields)
        try:
            with self._slot("publish") as local:
                entry_id = local.publish(
                    keys=[stream, ids, clock_key(self.prefix, channel)], args=args
                )
        except ERRORS as exc:
            raise self._error("publish", exc) from exc
        return event.id if event.id is not None else as_text(entry_id)

    def read_channel(
        self,
        channel: str,
        first: Key | None,
        user_id: str | None = None,
        count: int | None = None,
    ) -> ChannelRead:
        """Read ``channel``'s newest id and its entries from ``first`` on (inclusive), atomically.

        If ``user_id`` is one of the channel's user-supplied ids, read from its entry instead.

        :param count: the most entries to read; ``None``: all.
        """
        stream, ids, _ = keys(self.prefix, channel)
        args = [
            "" if first is None else format_id(first),
            "0" if user_id is None else "1",
            user_id or "",
            "" if count is None else count,
        ]
        try:
            with self._slot("read the history") as local:
                raw = local.read(keys=[stream, ids, clock_key(self.prefix, channel)], args=args)
        except ERRORS as exc:
            raise self._error("read the history", exc) from exc
        return ChannelRead(
            optional_key(raw[0]),
            optional_key(raw[1]),
            [decode_entry(e) for e in raw[2] or ()],
            int(raw[3]) if len(raw) > 3 else None,
            *restart_record(raw[4:]),
        )

    def tails(self, channels: Sequence[str]) -> list[Key]:
        """Each channel's newest entry id (``0-0`` for none), in one pipeline."""
        try:
            with self._slot("read the cursor") as local:
                client: t.Any = local.client  # some redis-py releases leave it untyped
                with client.pipeline(transaction=False) as pipe:
                    for name in channels:
                        pipe.xrevrange(keys(self.prefix, name)[0], count=1)
                    replies = pipe.execute()
        except ERRORS as exc:
            raise self._error("read the cursor", exc) from exc
        return [optional_key(reply[0][0]) or ZERO if reply else ZERO for reply in replies]

    # -- subscribing -----------------------------------------------------------------

    def subscribe(
        self, channels: Sequence[str], *, last_event_id: str | None = None
    ) -> Subscription:
        names = tuple(sorted({check_channel_name(name) for name in channels}))
        listener = self._listeners.get()
        sub = ClusterSubscription(listener, check_names(names), self.queue_size)
        start = functools.partial(self._hand_over, sub, last_event_id)
        return open_subscription(listener, sub, start, self.subscribe_timeout, self._unconfirmed)

    def _unconfirmed(self, error: str) -> BrokerError:
        return BrokerError(
            f"Redis Cluster {self.where()} did not confirm the subscription ({error})."
            " Check that the cluster is up."
        )

    def _hand_over(self, sub: ClusterSubscription, last_event_id: str | None) -> bool:
        """Replay after ``last_event_id`` into ``sub``, then switch it to live events."""
        return hand_over(self, sub, last_event_id)

    def cursor(self, channels: Sequence[str]) -> str:
        names = sorted({check_channel_name(name) for name in channels})
        return wire_id(self.tails(names))

    def worker_records(self) -> WorkerRecords:
        return RedisWorkerRecords(self._records_client, f"{self.prefix}{{{RECORDS_TAG}}}")

    @contextlib.contextmanager
    def _records_client(self) -> Iterator[RedisCluster]:
        with self._slot("use the workers' records") as local:
            yield local.client

    def subscriber_count(self) -> int:
        return self._listeners.count()

    def ping(self, *, timeout: float = 2.0) -> None:
        """Send ``PING`` to every master.

        :raises BrokerError: a master could not be reached or did not answer.
        """
        try:
            # In a slot like every command: the slots bound this process' connections.
            with self._slot("run PING") as local:
                local.client.ping(target_nodes=RedisCluster.PRIMARIES)
        except ERRORS as exc:
            raise self._error("run PING", exc) from exc

    def needed_commands(self) -> list[tuple[str, ...]]:
        """Every command the broker and redis-py's cluster client run, with the
        keys and sharded channel of a channel ``default`` (see :meth:`check`)."""
        stream, ids, channel = keys(self.prefix, "default")
        clock = clock_key(self.prefix, "default")
        return [
            ("PING",),
            ("CLUSTER", "SLOTS"),
            ("COMMAND",),
            ("EVAL", "return 0", "0"),
            ("EVALSHA", "0" * 40, "0"),
            ("SCRIPT", "LOAD", "return 0"),
            ("TIME",),
            ("HMGET", clock, "last", "run", "holes"),
            ("HSET", clock, "last", "0-1"),
            ("XADD", stream, "MAXLEN", "~", "1", "0-1", "prev", "0-0"),
            ("XRANGE", stream, "-", "+"),
            ("XREVRANGE", stream, "+", "-", "COUNT", "1"),
            ("HGET", ids, "id"),
            ("HSET", ids, "id", "0-1"),
            ("HLEN", ids),
            ("HGETALL", ids),
            ("HDEL", ids, "id"),
            ("SPUBLISH", channel, "0-1"),
            ("SSUBSCRIBE", channel),
            ("SUNSUBSCRIBE", channel),
            ("CLIENT", "SETNAME", SUBSCRIBER_NAME),
        ]

    def check(self) -> None:
        """:meth:`ping`, then ask every master whether this connection's user may
        run every command the broker needs (:meth:`needed_commands`), with
        ``redis.acl_check_cmd``: nothing is written or published.

        :raises BrokerError: a master cannot be reached, or refuses the user
            ACL rights; the message names the commands and the node.

        .. versionadded:: 0.1
        """
        self.ping()
        args = rights_args(self.needed_commands())
        try:
            with self._slot("check the ACL rights") as local:
                client: t.Any = local.client  # some redis-py releases leave it untyped
                replies = client.execute_command(
                    "EVAL", RIGHTS_SCRIPT, 0, *args, target_nodes=RedisCluster.PRIMARIES
                )
        except redis.exceptions.NoPermissionError:
            replies = [b"EVAL"]
        except ERRORS as exc:
            raise self._error("check the ACL rights", exc) from exc
        answers = replies.values() if isinstance(replies, dict) else [replies]
        refused = sorted({as_text(name) for answer in answers for name in answer or ()})
        if refused:
            grant = (
                f"ACL SETUSER <user> resetkeys ~{self.prefix}* resetchannels &{self.prefix}*"
                f" {ACL_COMMANDS} (on every node)"
            )
            raise BrokerError(refused_message(self.where(), refused, grant))

    def close(self) -> None:
        """Stop the listener, end open subscriptions and close the connections."""
        self._listeners.close()
        if self._locals_pid == os.getpid():
            locals_, self._locals = self._locals, {}
            for local in locals_.values():
                local.client.close()


class _Local:
    """One OS thread's cluster client, its scripts, and its bound on commands in flight."""

    def __init__(self, client: RedisCluster, max_connections: int) -> None:
        self.client = client
        self.publish = client.register_script(PUBLISH_SCRIPT)
        self.read = client.register_script(READ_SCRIPT)
        # At most this many commands at once, so at most this many pooled
        # connections to any node (redis-py's cluster pools do not block).
        self.slots = threading.BoundedSemaphore(max_connections)
