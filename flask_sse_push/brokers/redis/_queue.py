"""A client's bounded queue, shared by the Redis and the Redis Cluster subscriptions.

The process' listener fills it; the client's request thread drains it with
:meth:`QueuedSubscription.get`. Until the broker switches it to live events, it
only buffers what the listener announces (the *pending* items), so the replay
can be read after the client already receives live events. What a pending item
holds and how the queue is filled is the subclass' part.
"""

from __future__ import annotations

import collections
import threading
import typing as t

from ...exceptions import SubscriptionClosed
from ..base import Subscription
from ..handoff import Waking, defer_once

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from ...event import ServerSentEvent
    from ..handoff import Consumer


class Detaching(t.Protocol):
    """The listener's side a subscription needs: to leave it."""

    def detach(self, sub: t.Any) -> None: ...


_L = t.TypeVar("_L", bound=Detaching)
_I = t.TypeVar("_I")


class QueuedSubscription(Waking, Subscription, t.Generic[_L, _I]):
    """One client's bounded queue, filled by the listener ``_L``.

    ``_I`` is what is buffered before :meth:`go_live` (a live event with its
    entry id, and its channel where that matters). The lock guards what the
    listener and the broker touch; the reader's side takes no lock.
    """

    def __init__(self, listener: _L, channels: tuple[str, ...], limit: int) -> None:
        self.channels = channels
        self._listener = listener
        self._limit = limit
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._items: collections.deque[ServerSentEvent] = collections.deque()
        self._pending: list[_I] | None = []
        self.attached = False  # guarded by the listener's lock
        self._closed: SubscriptionClosed | None = None
        self._waiting = False  # the reader waits in get()
        self._consumer: Consumer | None = None
        self._deferred = False  # a hand-off job is deferred
        #: Set while the subscription waits without a reader (:meth:`park`).
        self._on_wake: Callable[[], None] | None = None

    parks = True

    # -- filled by the listener and the broker -----------------------------------------

    def _hold(self, item: _I) -> bool:
        """Buffer a live ``item`` while the replay is read; the caller holds the lock.

        Called only while the subscription is closed or not yet live.

        :returns: what :meth:`deliver` returns: False if the client overflowed.
        """
        pending = self._pending
        if self._closed is not None or pending is None:
            return True
        if len(pending) >= self._limit:
            return self._overflow()
        pending.append(item)
        return True

    def _overflow(self) -> bool:
        self._closed = SubscriptionClosed("overflow")
        self._items.clear()
        self._pending = None
        self.wake()
        return False

    def _notify(self) -> None:
        """Tell the reader, or its consumer, that events are ready."""
        consumer = self._consumer
        if consumer is None or not self._waiting:
            self.wake()
        else:
            self._deferred = defer_once(consumer, self._deferred, self._hand_off)
            if not self._deferred:
                self.wake()

    def _hand_off(self) -> None:
        """The deferred job: give the ready events to the consumer while the reader waits."""
        self._deferred = False
        consumer = self._consumer
        if consumer is None or not self._waiting or self._closed is not None or not self._items:
            return
        if not consumer.take(self._drain()):
            self.wake()

    def finish(self, reason: SubscriptionClosed) -> bool:
        """End the subscription; return False if it had ended already."""
        with self._lock:
            if self._closed is not None:
                return False
            self._closed = reason
            self._pending = None
        self.wake()
        return True

    # -- read by the client's request thread -------------------------------------------

    def get(self, timeout: float | None = None) -> list[ServerSentEvent]:
        if self._on_wake is not None:  # parked without a reader: that ends now
            self._on_wake = None
            self._waiting = False
        if not self._items and self._closed is None and timeout != 0:
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

    def park(self, wake: Callable[[], None]) -> bool:
        with self._lock:
            if self._items or self._closed is not None or self._consumer is None:
                return False
            self._on_wake = wake
            self._waiting = True
        return True

    def pending(self) -> int:
        return len(self._items)

    def close(self) -> None:
        self.finish(SubscriptionClosed("closed", reconnect=False))
        self._listener.detach(self)
