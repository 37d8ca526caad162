"""One client's subscription to the cluster broker: a bounded queue, a position per channel.

The process' listener (:mod:`._cluster_listener`) fills it from the shards'
connections; the client's request thread drains it with :meth:`get`. Each
channel's position is the newest id of that channel the client has (or never
needs), so a late event of one shard never hides an earlier one of another,
and the SSE id it carries is the composite cursor of all positions.
"""

from __future__ import annotations

import collections
import threading
import typing as t

from ..exceptions import SubscriptionClosed
from ._cluster_cursor import ChannelRead, verdict, wire_id
from ._redis_scripts import ZERO
from .base import Subscription, reset_event
from .handoff import defer_once

if t.TYPE_CHECKING:
    from ..event import ServerSentEvent
    from ._cluster_listener import ClusterListener
    from ._redis_scripts import Key
    from .handoff import Consumer

#: A live or replayed event: its channel, its entry id, the event.
Item: t.TypeAlias = "tuple[str, Key, ServerSentEvent]"


class ClusterSubscription(Subscription):
    """One client's bounded queue, filled by the process' cluster listener.

    Until :meth:`go_live` it only buffers, so the replay can be read after the
    client already receives live events.
    """

    def __init__(self, listener: ClusterListener, channels: tuple[str, ...], limit: int) -> None:
        self.channels = channels  # sorted: the order of the cursor's positions
        self._index = {name: i for i, name in enumerate(channels)}
        self._listener = listener
        self._limit = limit
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._items: collections.deque[ServerSentEvent] = collections.deque()
        self._pending: list[Item] | None = []
        self.attached = False  # guarded by the listener's lock
        self.positions: list[Key] = [ZERO] * len(channels)
        self._closed: SubscriptionClosed | None = None
        self._waiting = False
        self._consumer: Consumer | None = None
        self._deferred = False  # a hand-off job is deferred

    # -- filled by the listener and the broker -----------------------------------------

    def _append(
        self, channel: str, key: Key, event: ServerSentEvent, *, bounded: bool = True
    ) -> bool:
        """Queue one event if it is new for its channel; the caller holds the lock.

        A replay is not ``bounded``: the client asked for it, and it is finite.
        """
        index = self._index[channel]
        if key <= self.positions[index]:
            return True
        if bounded and len(self._items) >= self._limit:
            return self._overflow()
        self.positions[index] = key
        if len(self.channels) > 1:
            event = self._listener.stamp(event, tuple(self.positions))
        self._items.append(event)
        return True

    def position(self, channel: str) -> Key:
        """The newest id of ``channel`` this client has."""
        return self.positions[self._index[channel]]

    def _overflow(self) -> bool:
        self._closed = SubscriptionClosed("overflow")
        self._items.clear()
        self._pending = None
        self._wake.set()
        return False

    def deliver(self, channel: str, key: Key, event: ServerSentEvent) -> bool:
        """Queue a live event; return False if the client overflowed."""
        with self._lock:
            if self._closed is not None:
                return True
            if self._pending is not None:
                if len(self._pending) >= self._limit:
                    return self._overflow()
                self._pending.append((channel, key, event))
                return True
            if not self._append(channel, key, event):
                return False
        self._notify()
        return True

    def _notify(self) -> None:
        consumer = self._consumer
        if consumer is None or not self._waiting:
            self._wake.set()
        else:
            deferred = defer_once(consumer, self._deferred, self._hand_off)
            self._deferred = deferred is not None
            if deferred is None:
                self.wake()

    def _hand_off(self) -> None:
        """The deferred job: give the ready events to the consumer while the reader waits."""
        self._deferred = False
        consumer = self._consumer
        if consumer is None or not self._waiting or self._closed is not None or not self._items:
            return
        if not consumer.take(self._drain()):
            self.wake()

    def go_live(
        self,
        first: list[ServerSentEvent],
        backlog: list[Item],
        starts: list[Key],
        through: list[Key],
    ) -> bool:
        """Queue ``first`` (a reset), the replay, then the buffered live events.

        ``starts`` are the positions the replay starts after (the cursor's),
        ``through`` per channel the newest id the replay covers: the client's
        cursor moves from one to the other as the replay is sent.
        """
        with self._lock:
            pending = self._pending
            if self._closed is not None or pending is None:
                return self._closed is None
            self._items.extend(first)
            self.positions = list(starts)
            for channel, key, event in backlog:
                self._append(channel, key, event, bounded=False)
            self.positions = [max(a, b) for a, b in zip(self.positions, through, strict=True)]
            pending.sort(key=lambda item: item[1])
            self._pending = None
            for channel, key, event in pending:
                if not self._append(channel, key, event):
                    return False
            if not self._items:
                return True
        self._wake.set()
        return True

    def catch_up(self, channel: str, read: ChannelRead) -> bool:
        """Queue what ``channel`` published while its shard was away, or a ``reset``."""
        with self._lock:
            if self._closed is not None:
                return True
            if self._pending is not None:
                # Still handing over: go_live() drops what the replay covers.
                self._pending.extend((channel, e.key, e.event) for e in read.entries)
                return True
            index = self._index[channel]
            start = self.positions[index]
            if verdict(start, read, strict=True) == "ok":
                for entry in read.entries:
                    if not self._append(channel, entry.key, entry.event):
                        return False
            else:
                before = wire_id(self.positions)
                self.positions[index] = read.tail or ZERO
                self._items.append(reset_event(before, wire_id(self.positions), "expired"))
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

    # -- read by the client's request thread -------------------------------------------

    def get(self, timeout: float | None = None) -> list[ServerSentEvent]:
        if not self._items and self._closed is None:
            self._waiting = True
            self._wake.wait(timeout)
            self._waiting = False
            self._wake.clear()
        if self._closed is not None:
            raise self._closed
        return self._drain()

    def _drain(self) -> list[ServerSentEvent]:
        items = self._items
        batch = []
        while items:
            batch.append(items.popleft())
        return batch

    def set_consumer(self, consumer: Consumer | None) -> bool:
        self._consumer = consumer
        return True

    def wake(self) -> None:
        self._waiting = False
        self._wake.set()

    def pending(self) -> int:
        return len(self._items)

    def close(self) -> None:
        self.finish(SubscriptionClosed("closed", reconnect=False))
        self._listener.detach(self)
