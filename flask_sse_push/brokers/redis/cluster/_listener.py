"""The cluster broker's per-process listener: one sharded pub/sub connection per shard.

A channel's messages stay on the shard that owns its slot (``SSUBSCRIBE``), so
a process holds one subscriber connection (:mod:`.._subscriber`) per shard it
needs, each read by its own thread (a greenlet under gunicorn's gevent worker).
This module routes channels to shards, and recovers them.

When a shard's connection breaks (a node died, a replica is being promoted)
or Redis moves a channel's slot away (``SUNSUBSCRIBE`` it did not ask for),
the channel is *recovered*: its live messages are held, the topology is read
again, the channel is subscribed where its slot lives now, and once Redis
confirms, every client is caught up from the stream (or gets a ``reset``)
before the held messages go out. Work is done in batches that let other
greenlets run, with deadlines that grow with the number of channels.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
import typing as t

import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from ....exceptions import BrokerError, SubscriptionClosed
from ..._replay import Spending, mean_size, page_count
from .._channels import Channel, ListenerBase
from .._scripts import as_text
from .._subscriber import (
    RECOVERY_PAUSE,
    SUBSCRIBER_NAME,
    Subscriber,
    close_all,
    confirm_deadline,
    handshake,
    paced,
    resubscribe,
    settle,
)
from ._cursor import wire_id
from ._scripts import keys

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ....event import ServerSentEvent
    from .._scripts import Key
    from .._subscriber import Item, Waiter
    from ._subscription import ClusterSubscription
    from .broker import RedisClusterBroker

logger = logging.getLogger("flask_sse_push")

_T = t.TypeVar("_T")

#: Seconds of catching clients up in a row before other greenlets may run: a
#: client of many channels costs more (its cursor holds a position per channel).
CATCH_UP_SLICE = 0.02
#: Seconds a shard has to confirm a recovery's channels (plus an allowance per
#: channel): short, since the recovery then tries again with a fresh topology.
RECOVERY_CONFIRM = 1.0
#: Seconds a recovery keeps trying before its clients are ended.
GIVE_UP = 600.0


def _by_slot(prefix: str, command: str, names: Sequence[str]) -> list[tuple[str, ...]]:
    """One command per slot: Redis refuses a SSUBSCRIBE of channels of several slots."""
    by_slot: dict[int, list[str]] = {}
    for name in names:
        channel = keys(prefix, name)[2]
        by_slot.setdefault(key_slot(channel.encode()), []).append(channel)
    return [(command, *channels) for channels in by_slot.values()]


class _Shard(Subscriber):
    """The connection to the master serving some slots."""

    def __init__(self, listener: ClusterListener, host: str, port: int) -> None:
        tag = len(listener.broker.prefix) + 1  # "P{" before the channel name
        super().__init__(
            listener.lock,
            listener.broker,
            sharded=True,
            commands=functools.partial(_by_slot, listener.broker.prefix),
            name_of=lambda raw: as_text(raw)[tag:-1],
        )
        self.name, self.host, self.port = f"{host}:{port}", host, port


class _Channel(Channel["ClusterSubscription"]):
    __slots__ = ("shard", "held")

    def __init__(self) -> None:
        super().__init__()
        self.shard: _Shard | None = None
        # Live messages kept back while the channel is recovered; None otherwise.
        self.held: list[Item] | None = None


class ClusterListener(ListenerBase["ClusterSubscription", _Channel]):
    """This process' sharded pub/sub connections and the threads that read them."""

    backoff_min, backoff_max = 0.05, 0.5

    def __init__(self, broker: RedisClusterBroker) -> None:
        super().__init__()
        self.broker = broker
        self.shards: dict[str, _Shard] = {}
        self.closed = False
        self.error = "not connected yet"
        # The last event given a composite id, and its copies by positions: clients
        # at the same positions then share one object, which is encoded once.
        self._stamped: tuple[ServerSentEvent | None, dict[tuple[Key, ...], ServerSentEvent]] = (
            None,
            {},
        )

    def stamp(self, event: ServerSentEvent, positions: tuple[Key, ...]) -> ServerSentEvent:
        """``event`` with the composite cursor of ``positions`` as its id."""
        source, copies = self._stamped
        if source is not event:
            copies = {}
            self._stamped = (event, copies)
        stamped = copies.get(positions)
        if stamped is None:
            stamped = copies[positions] = dataclasses.replace(event, id=wire_id(positions))
        return stamped

    def _new_channel(self) -> _Channel:
        return _Channel()

    # -- called by request threads -------------------------------------------------

    def attach(self, sub: ClusterSubscription) -> Waiter:
        """Register ``sub``; the waiter is done when Redis confirmed its channels."""
        with self.lock:
            if self.closed:
                raise BrokerError("the broker is closed")
            # One being recovered is caught up by the recovery.
            names = [name for name, channel in self._join(sub) if channel.held is None]
            try:
                return self._subscribe(names)
            except (redis.RedisError, OSError, RedisClusterException, BrokerError) as exc:
                failure = exc
        self.detach(sub)
        raise BrokerError(
            f"Could not subscribe on Redis Cluster {self.broker.where()}: {failure}."
            " The broker reconnects by itself; check that the cluster is up."
        ) from failure

    def _connection(self, name: str, channel: _Channel, *, route: bool = False) -> _Shard | None:
        if route and (channel.shard is None or channel.shard.dead):
            channel.shard = self._route(name)
        return channel.shard

    def _route(self, name: str) -> _Shard:
        """The shard that serves ``name`` now, started if new; the caller holds the lock."""
        host, port = self.broker.owner(name)
        shard = self.shards.get(f"{host}:{port}")
        if shard is None or shard.dead:
            shard = self.shards[f"{host}:{port}"] = _Shard(self, host, port)
            self._spawn(self._run, shard)
        return shard

    def _spawn(self, target: Callable[[_T], None], arg: _T) -> None:
        thread = threading.Thread(target=target, args=(arg,), name="flask_sse_push-cluster")
        thread.daemon = True
        thread.start()

    # -- one thread per shard connection -----------------------------------------------

    def _run(self, shard: _Shard) -> None:
        try:
            self._serve(shard)
        except Exception as exc:  # whatever broke, the cure is to resubscribe elsewhere
            if not shard.dead and not self.closed:
                logger.warning(
                    "Redis Cluster subscriber connection to %s lost (%s); resubscribing.",
                    shard.name,
                    exc,
                )
                self._shard_failed(shard, exc)

    def _serve(self, shard: _Shard) -> None:
        connection: t.Any = redis.Connection  # some redis-py releases leave it untyped
        conn = connection(
            host=shard.host,
            port=shard.port,
            socket_connect_timeout=self.broker.socket_timeout,
            client_name=SUBSCRIBER_NAME,
            **self.broker.connection_kwargs,
        )
        conn.connect()
        _, clock = handshake(conn)
        with self.lock:
            if shard.dead:
                conn.disconnect()
                return
            shard.opened(conn, clock)
            names = [n for n, c in self.channels.items() if c.shard is shard]
        # Not those gone, or routed elsewhere meanwhile.
        resubscribe(self, names, lambda n: n in self.channels and self.channels[n].shard is shard)
        shard.read(
            lambda: shard.dead,
            self._dispatch,
            dropped=lambda name: self._follow(shard, [name]),
            refused=functools.partial(self._refused, shard),
        )

    def _held(self, name: str) -> bool:
        channel = self.channels.get(name)
        return channel is not None and channel.held is not None

    def _refused(self, shard: _Shard, slot: int) -> None:
        """Follow the channels of ``slot``: ``shard`` refused them, its slot map is out of date.

        A stream opening on one is caught up by the recovery, as on any channel
        being recovered; a recovery's own waiter fails, so that it tries again.
        """
        prefix = self.broker.prefix
        with self.lock:
            names = [
                name
                for name, channel in self.channels.items()
                if channel.shard is shard and key_slot(keys(prefix, name)[2].encode()) == slot
            ]
            for name in names:
                shard.forget(name, handed=self.channels[name].held is None)
        self._follow(shard, names)

    def _follow(self, shard: _Shard, names: list[str]) -> None:
        """Recover ``names``: Redis dropped or refused them on ``shard``, their slot moved."""
        with self.lock:
            fresh = self._unroute(shard, names)
        if fresh:
            logger.info("Redis Cluster moved %r away from %s; following.", fresh[:10], shard.name)
            self._spawn(self._recover, fresh)

    def _unroute(self, shard: _Shard, names: Iterable[str]) -> list[str]:
        """Take those of ``names`` on ``shard`` off it and hold their messages; return those
        held only now (a recovery under way routes the others again). The caller holds the lock."""
        fresh = []
        for name in names:
            channel = self.channels.get(name)
            if channel is not None and channel.shard is shard:
                channel.shard = None
                if channel.held is None:
                    channel.held = []
                    fresh.append(name)
        return fresh

    def _dispatch(self, name: str, key: Key, event: ServerSentEvent) -> None:
        channel = self.channels.get(name)
        if channel is None:
            return
        if channel.held is not None:
            with self.lock:
                if channel.held is not None:
                    channel.held.append((name, key, event))
                    return
        settle(self, channel.subs, lambda sub: sub.deliver(name, key, event))

    # -- recovery ----------------------------------------------------------------------

    def _shard_failed(self, shard: _Shard, exc: BaseException) -> None:
        with self.lock:
            if shard.dead:
                return
            shard.lost(dead=True)
            self.error = str(exc) or type(exc).__name__
            if self.shards.get(shard.name) is shard:
                del self.shards[shard.name]
            names = self._unroute(shard, self.channels)
            conn, shard.conn = shard.conn, None
        if conn is not None:
            conn.disconnect()
        if names:
            self._recover(names)

    def _recover(self, names: list[str]) -> None:
        """Subscribe ``names`` where their slots live now, then catch their clients up."""
        failures = 0
        began = time.monotonic()
        while names and not self.closed:
            if failures:
                time.sleep(self._backoff(failures))
            try:
                self.broker.refresh_topology()
                names, waiters = resubscribe(self, names, self._held)
                deadline = confirm_deadline(RECOVERY_CONFIRM, len(names))
                for waiter in waiters:
                    left = deadline - time.monotonic()
                    if not waiter.done.wait(max(left, 0.0)) or waiter.failed:
                        raise redis.TimeoutError("the new shard did not confirm SSUBSCRIBE")
                names = self._catch_up(names)
                if names:
                    raise redis.ConnectionError(f"{len(names)} channels lost their shard again")
            except Exception as exc:  # the topology is still changing: try again
                failures += 1
                logger.debug("Redis Cluster resubscribe failed (%s); retrying.", exc)
                if time.monotonic() - began > GIVE_UP:
                    self._give_up(names)
                    return
                continue
            self.broker.reconnects += 1
            logger.info("Redis Cluster channels resubscribed after %d attempts.", failures + 1)

    def _catch_up(self, names: list[str]) -> list[str]:
        """Catch every client of ``names`` up from the streams; then release the held.

        Returns those that lost their shard meanwhile: they stay held.
        """
        again: list[str] = []
        spendings: dict[int, Spending] = {}
        for batch in paced(names):
            with self.lock:
                wanted = {n: list(self.channels[n].subs) for n in batch if n in self.channels}
            since = time.monotonic()
            for name, subs in wanted.items():
                self._catch_up_channel(name, subs, spendings)
                if time.monotonic() - since > CATCH_UP_SLICE:
                    time.sleep(RECOVERY_PAUSE)  # the held messages stay held meanwhile
                    since = time.monotonic()
            again += self._release(batch)
        return again

    def _catch_up_channel(
        self, name: str, subs: list[ClusterSubscription], spendings: dict[int, Spending]
    ) -> None:
        """Read ``name``'s stream in pages (:mod:`..._replay`) for ``subs``, each
        client given at most its replay budget over the recovery."""
        budget, size = self.broker.replay_budget, None
        while subs:
            count = page_count(1, budget, size)
            start = min(sub.position(name) for sub in subs)
            # One more than a page: the entry at the start itself comes first.
            read = self.broker.read_channel(name, start, None, count + 1)
            steps = [
                (sub, sub.catch_up(name, read, spendings.setdefault(id(sub), Spending(budget))))
                for sub in subs
            ]
            for sub in [sub for sub, more in steps if more is False]:
                self.detach(sub)  # it overflowed
            if not read.entries or read.entries[-1].key == read.tail:
                return
            subs = [sub for sub, more in steps if more]
            size = mean_size([entry.event for entry in read.entries])
            time.sleep(RECOVERY_PAUSE)

    def _release(self, names: Sequence[str]) -> list[str]:
        """Deliver the messages held back for ``names``, and stop holding them.

        Not for one that lost its shard since Redis confirmed it (a failover, a
        slot that moved on): it is returned, still held, to be recovered again.
        """
        overflowed, again = [], []
        with self.lock:
            for name in names:
                channel = self.channels.get(name)
                if channel is None or channel.held is None:
                    continue
                shard = channel.shard
                if shard is None or shard.dead or not shard.subscribed(name):
                    again.append(name)
                    continue
                held, channel.held = channel.held, None
                for item in held:
                    overflowed += [sub for sub in channel.subs if not sub.deliver(*item)]
        for sub in overflowed:
            self.detach(sub)
        return again

    def _give_up(self, names: list[str]) -> None:
        with self.lock:
            subs = {id(s): s for n in names if n in self.channels for s in self.channels[n].subs}
        for sub in subs.values():
            sub.finish(SubscriptionClosed("broker unreachable"))
            self.detach(sub)

    # -- shutdown --------------------------------------------------------------------

    def close(self) -> None:
        """Stop every thread, drop the connections and end every subscription."""
        with self.lock:
            self.closed = True
            shards, self.shards = list(self.shards.values()), {}
        close_all(self, shards)
