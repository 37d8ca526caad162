"""The cluster broker's per-process listener: one sharded pub/sub connection per shard.

A channel's messages stay on the shard that owns its slot (``SSUBSCRIBE``), so
a process holds one subscriber connection per shard it needs, each read by its
own thread (a greenlet under gunicorn's gevent worker). Channels are
reference-counted as in the single-node listener.

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
import logging
import threading
import time
import typing as t

import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from ....exceptions import BrokerError, SubscriptionClosed
from .._channels import Channel, ListenerBase, Waiter, confirm_waiters
from .._scripts import as_text
from ..standalone._listener import RECOVERY_PAUSE, SUBSCRIBER_NAME
from ._cursor import wire_id
from ._scripts import keys

if t.TYPE_CHECKING:
    from ....event import ServerSentEvent
    from .._scripts import Key
    from ._subscription import ClusterSubscription, Item
    from .broker import RedisClusterBroker

logger = logging.getLogger("flask_sse_push")

#: Channels per SSUBSCRIBE command and per routing or catch-up step; other
#: greenlets run between two steps (a RECOVERY_PAUSE: a ``sleep(0)`` would let
#: gevent run up to 50 of them before it looks at its timers and sockets).
BATCH = 500
#: Replies (messages, confirmations) read in a row before other greenlets may run.
DISPATCH_BATCH = 128
#: Seconds of catching clients up in a row before other greenlets may run: a
#: client of many channels costs more (its cursor holds a position per channel).
CATCH_UP_SLICE = 0.02


class _Shard:
    """One subscriber connection, to the master serving some slots."""

    def __init__(self, name: str, host: str, port: int) -> None:
        self.name, self.host, self.port = name, host, port
        self.conn: t.Any = None
        self.open = False
        self.dead = False
        # SSUBSCRIBE / SUNSUBSCRIBE commands sent and confirmed, per channel.
        self.sent: dict[str, int] = {}
        self.acked: dict[str, int] = {}
        self.unsubscribing: dict[str, int] = {}
        self.waiters: dict[str, list[tuple[int, Waiter]]] = {}


class _Channel(Channel["ClusterSubscription"]):
    __slots__ = ("shard", "held")

    def __init__(self) -> None:
        super().__init__()
        self.shard: _Shard | None = None
        # Live messages kept back while the channel is recovered; None otherwise.
        self.held: list[Item] | None = None


class ClusterListener(ListenerBase["ClusterSubscription", _Channel]):
    """This process' sharded pub/sub connections and the threads that read them."""

    backend = "Redis Cluster"
    backoff_min, backoff_max = 0.05, 0.5

    def __init__(self, broker: RedisClusterBroker) -> None:
        super().__init__()
        self.broker = broker
        self.shards: dict[str, _Shard] = {}
        self.closed = False
        self.error = "not connected yet"
        self._tag = len(broker.prefix) + 1  # "P{" before the channel name
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

    def _name(self, raw: object) -> str:
        return as_text(raw)[self._tag : -1]

    # -- called by request threads -------------------------------------------------

    def attach(self, sub: ClusterSubscription) -> Waiter:
        """Register ``sub``; the waiter is done when Redis confirmed its channels."""
        with self.lock:
            if self.closed:
                raise BrokerError("the broker is closed")
            targets: list[tuple[_Shard, str, int]] = []
            fresh: dict[str, list[str]] = {}
            try:
                for name, channel in self._join(sub):
                    if channel.held is not None:
                        continue  # being recovered: the recovery catches this one up too
                    shard = channel.shard
                    if shard is None:
                        shard = channel.shard = self._route(name)
                        if shard.open:
                            fresh.setdefault(shard.name, []).append(name)
                        target = shard.sent.get(name, 0) + 1
                        if not shard.open:
                            shard.sent[name] = target  # the connection's first batch
                        targets.append((shard, name, target))
                    elif shard.acked.get(name, 0) < shard.sent.get(name, 0) or not shard.open:
                        targets.append((shard, name, max(shard.sent.get(name, 0), 1)))
                for shard_name, names in fresh.items():
                    self._send(self.shards[shard_name], "SSUBSCRIBE", names)
            except (redis.RedisError, OSError, RedisClusterException, BrokerError) as exc:
                failure: Exception | None = exc
            else:
                failure = None
            waiter = self._wait_for(targets)
        if failure is not None:
            self.detach(sub)
            raise BrokerError(
                f"Could not subscribe on Redis Cluster {self.broker.where()}: {failure}."
                " The broker reconnects by itself; check that the cluster is up."
            ) from failure
        return waiter

    def _wait_for(self, targets: list[tuple[_Shard, str, int]]) -> Waiter:
        """A waiter for the given confirmations; the caller holds the lock."""
        waiter = Waiter(len(targets))
        for shard, name, target in targets:
            if shard.dead:
                waiter.fail()
            elif shard.acked.get(name, 0) >= target:
                waiter.confirm()
            else:
                shard.waiters.setdefault(name, []).append((target, waiter))
        return waiter

    def detach(self, sub: ClusterSubscription) -> None:
        """Unregister ``sub``; unsubscribe the channels nobody here wants any more."""
        with self.lock:
            gone: dict[str, list[str]] = {}
            for name, channel in self._leave(sub):
                del self.channels[name]
                shard = channel.shard
                if shard is not None and shard.open and not shard.dead:
                    gone.setdefault(shard.name, []).append(name)
                    shard.unsubscribing[name] = shard.unsubscribing.get(name, 0) + 1
            for shard_name, names in gone.items():
                try:
                    self._send(self.shards[shard_name], "SUNSUBSCRIBE", names, count=False)
                except (redis.RedisError, OSError) as exc:
                    logger.debug("Could not unsubscribe on Redis Cluster: %s", exc)

    def _send(self, shard: _Shard, command: str, names: list[str], *, count: bool = True) -> None:
        """Write a command on ``shard``'s connection; the caller holds the lock."""
        conn = shard.conn
        if conn is None or shard.dead:
            raise redis.ConnectionError(f"the subscriber connection to {shard.name} is closed")
        if count:
            for name in names:
                shard.sent[name] = shard.sent.get(name, 0) + 1
        # One command per slot: Redis refuses a SSUBSCRIBE of channels of several slots.
        by_slot: dict[int, list[str]] = {}
        for name in names:
            channel = keys(self.broker.prefix, name)[2]
            by_slot.setdefault(key_slot(channel.encode()), []).append(channel)
        commands = [(command, *channels) for channels in by_slot.values()]
        try:
            conn.send_packed_command(conn.pack_commands(commands), check_health=False)
        except Exception as exc:
            raise redis.ConnectionError(f"could not send {command}: {exc}") from exc

    def _route(self, name: str) -> _Shard:
        """The shard that serves ``name`` now, started if new; the caller holds the lock."""
        host, port = self.broker.owner(name)
        shard_name = f"{host}:{port}"
        shard = self.shards.get(shard_name)
        if shard is None or shard.dead:
            shard = self.shards[shard_name] = _Shard(shard_name, host, port)
            thread = threading.Thread(
                target=self._run, args=(shard,), name="flask_sse_push-cluster", daemon=True
            )
            thread.start()
        return shard

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
        with self.lock:
            if shard.dead:
                conn.disconnect()
                return
            shard.conn = conn
            shard.open = True
            names = [n for n, c in self.channels.items() if c.shard is shard]
            for name in names:
                shard.sent[name] = max(shard.sent.get(name, 0) - 1, 0)  # counted at attach
        for start in range(0, len(names), BATCH):
            with self.lock:
                batch = [n for n in names[start : start + BATCH] if self._wants(n, shard)]
                if batch:
                    self._send(shard, "SSUBSCRIBE", batch)
            time.sleep(RECOVERY_PAUSE)
        self._read_forever(shard, conn)

    def _wants(self, name: str, shard: _Shard) -> bool:
        channel = self.channels.get(name)
        return channel is not None and channel.shard is shard

    def _read_forever(self, shard: _Shard, conn: t.Any) -> None:
        heard = time.monotonic()
        pinged = False
        read = confirmed = 0
        while not shard.dead:
            if not conn.can_read(timeout=1.0):
                now = time.monotonic()
                if now - heard > self.health_interval:
                    if pinged:
                        raise redis.TimeoutError("Redis did not answer PING")
                    with self.lock:
                        conn.send_packed_command(conn.pack_command("PING"), check_health=False)
                    heard, pinged = now, True
                continue
            reply = conn.read_response(push_request=True)
            heard, pinged = time.monotonic(), False
            read += 1
            if read % DISPATCH_BATCH == 0:
                # A backlog is read from the buffer without blocking: let the
                # streams drain their queues and the other requests run. The
                # confirmations of thousands of channels (a resubscribe) come
                # on several shards at once, so those wait for a timer.
                time.sleep(RECOVERY_PAUSE if confirmed else 0)
                confirmed = 0
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind = as_text(reply[0])
            if kind == "smessage":
                self._dispatch(self._name(reply[1]), reply[2])
            elif kind == "ssubscribe":
                self._confirmed(shard, self._name(reply[1]))
                confirmed += 1
            elif kind == "sunsubscribe":
                self._unsubscribed(shard, self._name(reply[1]))

    def _confirmed(self, shard: _Shard, name: str) -> None:
        with self.lock:
            acked = shard.acked[name] = shard.acked.get(name, 0) + 1
            waiting = confirm_waiters(shard.waiters.pop(name, []), acked)
            if waiting:
                shard.waiters[name] = waiting

    def _unsubscribed(self, shard: _Shard, name: str) -> None:
        with self.lock:
            asked = shard.unsubscribing.get(name, 0)
            if asked:
                shard.unsubscribing[name] = asked - 1
                return
            # Redis dropped it: the slot moved to another shard.
            channel = self.channels.get(name)
            if channel is None or channel.shard is not shard:
                return
            channel.shard = None
            if channel.held is not None:
                return  # a recovery is under way and routes it again
            channel.held = []
        logger.info("Redis Cluster moved channel %r away from %s; following it.", name, shard.name)
        threading.Thread(
            target=self._recover, args=([name],), name="flask_sse_push-cluster", daemon=True
        ).start()

    def _dispatch(self, name: str, payload: object) -> None:
        channel = self.channels.get(name)
        if channel is None or not channel.subs:
            return
        announced = self._announcement(payload, name)
        if announced is None:
            return
        key, event = announced
        if channel.held is not None:
            with self.lock:
                if channel.held is not None:
                    channel.held.append((name, key, event))
                    return
        for sub in channel.subs:
            if not sub.deliver(name, key, event):
                self.detach(sub)

    # -- recovery ----------------------------------------------------------------------

    def _shard_failed(self, shard: _Shard, exc: BaseException) -> None:
        with self.lock:
            if shard.dead:
                return
            shard.dead = True
            shard.open = False
            self.error = str(exc) or type(exc).__name__
            if self.shards.get(shard.name) is shard:
                del self.shards[shard.name]
            for waiting in shard.waiters.values():
                for _, waiter in waiting:
                    waiter.fail()
            shard.waiters.clear()
            names = []
            for name, channel in self.channels.items():
                if channel.shard is shard:
                    channel.shard = None
                    # A channel held back is being recovered already: that
                    # recovery sees the failure and routes it again.
                    if channel.held is None:
                        channel.held = []
                        names.append(name)
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
                names, waiters = self._resubscribe(names)
                # The deadline grows with the work: a second, plus a millisecond a channel.
                deadline = time.monotonic() + 1.0 + 0.001 * len(names)
                for waiter in waiters:
                    left = deadline - time.monotonic()
                    if not waiter.done.wait(max(left, 0.0)) or waiter.failed:
                        raise redis.TimeoutError("the new shard did not confirm SSUBSCRIBE")
                self._catch_up(names)
            except Exception as exc:  # the topology is still changing: try again
                failures += 1
                logger.debug("Redis Cluster resubscribe failed (%s); retrying.", exc)
                if time.monotonic() - began > 600:
                    self._give_up(names)
                    return
                continue
            self.broker.reconnects += 1
            logger.info("Redis Cluster channels resubscribed after %d attempts.", failures + 1)
            return

    def _resubscribe(self, names: list[str]) -> tuple[list[str], list[Waiter]]:
        """Route ``names`` to where their slots live now and subscribe them there.

        Returns the names still being recovered, and the waiters for Redis'
        confirmations. Works in batches, pausing between them.
        """
        kept: list[str] = []
        waiters: list[Waiter] = []
        for start in range(0, len(names), BATCH):
            with self.lock:
                targets: list[tuple[_Shard, str, int]] = []
                fresh: dict[str, list[str]] = {}
                for name in names[start : start + BATCH]:
                    channel = self.channels.get(name)
                    if channel is None or channel.held is None:
                        continue  # gone, or detached and subscribed afresh meanwhile
                    kept.append(name)
                    shard = channel.shard
                    if shard is None or shard.dead:
                        shard = channel.shard = self._route(name)
                        if shard.open:
                            fresh.setdefault(shard.name, []).append(name)
                            target = shard.sent.get(name, 0) + 1
                        else:
                            target = shard.sent[name] = shard.sent.get(name, 0) + 1
                    else:
                        target = max(shard.sent.get(name, 0), 1)
                    targets.append((shard, name, target))
                for shard_name, batch in fresh.items():
                    self._send(self.shards[shard_name], "SSUBSCRIBE", batch)
                waiters.append(self._wait_for(targets))
            time.sleep(RECOVERY_PAUSE)
        return kept, waiters

    def _catch_up(self, names: list[str]) -> None:
        """Read each channel's stream once and catch every client up; then release the held."""
        for start in range(0, len(names), BATCH):
            batch = names[start : start + BATCH]
            with self.lock:
                wanted = {n: self.channels[n].subs for n in batch if n in self.channels}
            firsts = {
                name: min(sub.position(name) for sub in subs) for name, subs in wanted.items()
            }
            reads = self.broker.read_channels(firsts)
            since = time.monotonic()
            for name, subs in wanted.items():
                for sub in subs:
                    if not sub.catch_up(name, reads[name]):
                        self.detach(sub)
                if time.monotonic() - since > CATCH_UP_SLICE:
                    time.sleep(RECOVERY_PAUSE)  # the held messages stay held meanwhile
                    since = time.monotonic()
            overflowed = []
            with self.lock:
                for name in batch:
                    channel = self.channels.get(name)
                    if channel is None or channel.held is None:
                        continue
                    held, channel.held = channel.held, None
                    for item in held:
                        for sub in channel.subs:
                            if not sub.deliver(*item):
                                overflowed.append(sub)
            for sub in overflowed:
                self.detach(sub)
            time.sleep(RECOVERY_PAUSE)

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
            subs = self._leave_all()
            shards = list(self.shards.values())
            self.shards.clear()
            for shard in shards:
                shard.dead = True
                for waiting in shard.waiters.values():
                    for _, waiter in waiting:
                        waiter.fail()
        for sub in subs:
            sub.finish(SubscriptionClosed("broker closed"))
        for shard in shards:
            if shard.conn is not None:
                shard.conn.disconnect()
