"""One client's subscription to the Redis broker: a bounded queue and its handover.

The process' listener (:mod:`._redis_listener`) fills it; the client's request
thread drains it with :meth:`RedisSubscription.get`.
"""

from __future__ import annotations

import collections
import threading
import typing as t

from ..exceptions import SubscriptionClosed
from ._redis_scripts import ZERO, format_id
from .base import Subscription, reset_event
from .handoff import defer_once

if t.TYPE_CHECKING:
    from ..event import ServerSentEvent
    from ._redis_listener import Listener
    from ._redis_scripts import Key, Snapshot
    from .handoff import Consumer


class RedisSubscription(Subscription):
    """One client's bounded queue, filled by the process' listener.

    Until :meth:`go_live` it only buffers what the listener announces, so the
    replay can be read after the client already receives live events.
    """

    def __init__(self, listener: Listener, channels: tuple[str, ...], limit: int) -> None:
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
        self._waiting = False  # the reader waits in get()
        self._consumer: Consumer | None = None
        self._deferred = False  # a hand-off job is deferred

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
        consumer = self._consumer
        if consumer is None or not self._waiting:
            self._wake.set()
        else:
            deferred = defer_once(consumer, self._deferred, self._hand_off)
            self._deferred = deferred is not None
            if deferred is None:
                self.wake()
        return True

    def _hand_off(self) -> None:
        """The deferred job: give the ready events to the consumer while the reader waits."""
        self._deferred = False
        consumer = self._consumer
        if consumer is None or not self._waiting or self._closed is not None or not self._items:
            return
        if not consumer.take(self._drain()):
            self.wake()

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
