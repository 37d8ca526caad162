"""The memory broker's channels and per-client mailboxes.

A mailbox is a bounded per-client queue that the publisher appends to and the
client's stream drains. With a consumer (:meth:`Mailbox.set_consumer`), a
one-channel mailbox whose reader waits is *parked* in its channel's
:class:`~flask_sse_push.brokers.handoff.ParkingLot` instead: the publisher no
longer touches it, and the lot hands each batch to every parked mailbox's
consumer at once. A mailbox of several channels hands its own queue to its
consumer, as the order across its channels is its own.

A channel's methods run under the broker's lock; a mailbox takes it wherever
its reader's side touches what publishers share.
"""

from __future__ import annotations

import collections
import threading
import typing as t

from ...exceptions import SubscriptionClosed
from ..base import Subscription
from ..handoff import ParkingLot, Waking, defer_once

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ...event import ServerSentEvent
    from ..handoff import Consumer
    from ._state import Incarnation

#: Histories up to this long are lists: ``del history[0]`` moves that many pointers.
_SHORT_HISTORY = 32


class Channel:
    """One channel: its history, and its mailboxes, queued or parked."""

    __slots__ = (
        "size",
        "history",
        "trimmed_through",
        "queued",
        "lot",
    )

    def __init__(self, size: int) -> None:
        self.size = size
        #: ``(seq, event)`` pairs, oldest first: a list while short, as most
        #: channels stay (an empty deque alone takes 760 bytes), then a deque.
        self.history: (
            list[tuple[int, ServerSentEvent]] | collections.deque[tuple[int, ServerSentEvent]]
        ) = []
        self.trimmed_through = 0
        #: Mailboxes the publisher appends to, in subscription order.
        self.queued: dict[Mailbox, None] = {}
        #: Mailboxes whose reader waits with a consumer.
        self.lot: ParkingLot[Mailbox] = ParkingLot()

    def keep(self, seq: int, event: ServerSentEvent) -> None:
        """Add an event to the history, trimming the oldest beyond its size."""
        history = self.history
        if len(history) >= self.size:
            self.trimmed_through = history[0][0]
            if isinstance(history, list):
                del history[0]  # a deque drops it itself, at its maxlen
        history.append((seq, event))
        if len(history) == _SHORT_HISTORY and self.size > _SHORT_HISTORY:
            self.history = collections.deque(history, maxlen=self.size)

    def empty(self) -> bool:
        return not self.queued and not self.lot.parked

    def mailboxes(self) -> list[Mailbox]:
        return [*self.queued, *self.lot.parked]

    def deliver(self, broker: Incarnation, seq: int, event: ServerSentEvent) -> None:
        """Give ``event`` to every mailbox: queued ones now, parked ones in a hand-off."""
        if self.queued:
            for mailbox in tuple(self.queued):
                if not mailbox.put(event):
                    broker._drop(mailbox, SubscriptionClosed("overflow"))
        lot = self.lot
        if not lot.parked:
            return
        if lot.add(seq, event) > broker.queue_size:
            # As far behind as a queue may get: they would have overflowed too.
            for mailbox in tuple(lot.parked):
                broker._drop(mailbox, SubscriptionClosed("overflow"))
            return
        if not lot.due and not lot.defer(lambda: broker._flush(self)):
            for mailbox in tuple(lot.parked):
                mailbox.wake()  # the reader unparks and collects what is fresh

    def flush(self) -> None:
        """Hand what is fresh to the parked mailboxes; queue and wake the ones that lag."""
        for mailbox in self.lot.hand_off():
            # Its consumer has the rest of these; the reader finishes them.
            self.queued[mailbox] = None
            mailbox.wake()

    def unpark(self, mailbox: Mailbox) -> bool:
        """Return ``mailbox`` to the queued ones, with what it missed while parked.

        :returns: False if it was not parked (a flush unparked it, or it left).
        """
        missed = self.lot.unpark(mailbox)
        if missed is None:
            return False
        mailbox._items.extend(missed)
        self.queued[mailbox] = None
        return True


class Mailbox(Waking, Subscription):
    """A bounded per-client queue, woken by an event flag.

    The publisher sets the flag only when the reader is waiting for it, so a
    burst of events to a busy reader costs one wake-up, not one per event. With
    a consumer, a waiting reader is not woken at all: a one-channel mailbox
    parks in its channel's lot, and one of several channels defers its own job.
    """

    __slots__ = (
        "_broker",
        "channels",
        "_items",
        "_wake",
        "_waiting",
        "_limit",
        "_closed",
        "consumer",
        "_deferred",
        "start_id",
        "_on_wake",
    )

    parks = True

    def __init__(self, broker: Incarnation, channels: Sequence[str], limit: int):
        self._broker = broker
        self.channels = tuple(dict.fromkeys(channels))  # a repeat would detach twice
        # A list, not a deque: it is swapped out whole, and an empty list is a
        # tenth of an empty deque's size, which counts with 10,000s of clients.
        self._items: list[ServerSentEvent] = []
        self._wake = threading.Event()
        self._waiting = False
        self._limit = limit
        self._closed: SubscriptionClosed | None = None
        self.consumer: Consumer | None = None
        self._deferred = False  # this mailbox's own hand-off job is deferred
        self.start_id: str | None = None
        #: Set while the mailbox waits without a reader (:meth:`park`).
        self._on_wake: Callable[[], None] | None = None

    def put(self, event: ServerSentEvent) -> bool:
        """Queue ``event``; return False, queueing nothing, if the client is full."""
        items = self._items
        if len(items) >= self._limit:
            return False
        items.append(event)
        if self._waiting:
            consumer = self.consumer
            if consumer is None:
                self.wake()
            else:
                self._deferred = defer_once(consumer, self._deferred, self._hand_off)
                if not self._deferred:
                    self.wake()
        return True

    def _hand_off(self) -> None:
        """The own job of a mailbox that is not parked (it has several channels)."""
        with self._broker._lock:
            self._deferred = False
            consumer = self.consumer
            if not self._waiting or self._closed is not None or not self._items:
                return
            if consumer is None:
                return
            batch, self._items = self._items, []
            if not consumer.take(batch):
                self.wake()

    def finish(self, reason: SubscriptionClosed) -> bool:
        """Mark the mailbox ended; return False if it had ended already."""
        if self._closed is not None:
            return False
        self._closed = reason
        self.wake()
        return True

    def park(self, wake: Callable[[], None]) -> bool:
        with self._broker._lock:
            if self._items or self._closed is not None or self.consumer is None:
                return False
            self._on_wake = wake
            self._waiting = True
            if len(self.channels) == 1:
                self._broker._park_locked(self)
        return True

    def get(self, timeout: float | None = None) -> list[ServerSentEvent]:
        if self._on_wake is not None:  # parked without a reader: that ends now
            with self._broker._lock:
                self._on_wake = None
                self._waiting = False
                self._broker._unpark_locked(self)
        if not self._items and self._closed is None and timeout != 0:
            park = self.consumer is not None and len(self.channels) == 1
            # Announce the wait before looking again, so a put in between
            # either is seen here or sets the flag.
            self._wake.clear()
            self._waiting = True
            if park:
                self._broker._park(self)
            if not self._items and self._closed is None:
                self._wake.wait(timeout)
            self._waiting = False
            if park:
                self._broker._unpark(self)
        if self._closed is not None:
            raise self._closed
        if not self._items:
            return []
        with self._broker._lock:  # publishers append under this lock
            batch, self._items = self._items, []
        return batch

    def pending(self) -> int:
        return len(self._items)

    def set_consumer(self, consumer: Consumer | None) -> bool:
        with self._broker._lock:
            self.consumer = consumer
            if consumer is None and self._broker._unpark_locked(self):
                self.wake()  # turned off from another thread while parked
        return True

    def close(self) -> None:
        with self._broker._lock:
            self._broker._drop(self, SubscriptionClosed("closed", reconnect=False))
