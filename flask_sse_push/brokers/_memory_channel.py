"""The memory broker's channels and per-client mailboxes, with direct delivery.

A mailbox is a bounded per-client queue that the publisher appends to and the
client's stream drains. With direct delivery on (:meth:`Mailbox.set_direct`),
a one-channel mailbox whose reader waits is *parked* on its channel instead:
the publisher no longer touches it, but appends the event once to the
channel's ``fresh`` list, and one job per channel, run when the publisher
yields, hands that same list to every parked client's sink. Fan-out then
costs one append per event and one write per client, with no per-client queue
work and no wake-up. A mailbox of several channels is delivered to directly
too, but through its own queue and its own job, as the order across its
channels is its own.

A channel's methods run under the broker's lock; a mailbox takes it wherever
its reader's side touches what publishers share.
"""

from __future__ import annotations

import bisect
import collections
import threading
import typing as t

from ..exceptions import SubscriptionClosed
from .base import Subscription

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from ..event import ServerSentEvent
    from ._memory_state import Incarnation
    from .base import DirectSink

#: Histories up to this long are lists: ``del history[0]`` moves that many pointers.
_SHORT_HISTORY = 32


class Channel:
    """One channel: its history, and its mailboxes, queued or parked."""

    __slots__ = (
        "size",
        "history",
        "trimmed_through",
        "queued",
        "parked",
        "fresh",
        "fresh_seqs",
        "flush_due",
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
        #: Parked mailboxes, with the last seq each had when it parked.
        self.parked: dict[Mailbox, int] = {}
        #: Events for the parked mailboxes since the last flush, and their seqs.
        self.fresh: list[ServerSentEvent] = []
        self.fresh_seqs: list[int] = []
        self.flush_due = False

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
        return not self.queued and not self.parked

    def mailboxes(self) -> list[Mailbox]:
        return [*self.queued, *self.parked]

    def deliver(self, broker: Incarnation, seq: int, event: ServerSentEvent) -> None:
        """Give ``event`` to every mailbox: queued ones now, parked ones in a flush."""
        if self.queued:
            for mailbox in tuple(self.queued):
                if not mailbox.put(event):
                    broker._drop(mailbox, SubscriptionClosed("overflow"))
        if not self.parked:
            return
        self.fresh.append(event)
        self.fresh_seqs.append(seq)
        if len(self.fresh) > broker.queue_size:
            # As far behind as a queue may get: they would have overflowed too.
            for mailbox in tuple(self.parked):
                broker._drop(mailbox, SubscriptionClosed("overflow"))
            return
        if not self.flush_due:
            self.flush_due = True
            sink = next(iter(self.parked))._sink
            assert sink is not None
            if not sink.schedule(lambda: broker._flush(self)):
                self.flush_due = False
                for mailbox in tuple(self.parked):
                    mailbox.wake()  # the reader unparks and collects ``fresh``

    def flush(self) -> None:
        """Hand what is fresh to every parked mailbox's sink; unpark the ones that lag."""
        self.flush_due = False
        fresh, seqs = self.fresh, self.fresh_seqs
        if not fresh:
            return
        self.fresh, self.fresh_seqs = [], []
        first = seqs[0]
        tails: dict[int, list[ServerSentEvent]] = {}
        for mailbox, last in tuple(self.parked.items()):
            batch = fresh
            if last >= first:  # parked after some of these: it has them already
                tail = tails.get(last)
                if tail is None:
                    tail = tails[last] = fresh[bisect.bisect_right(seqs, last) :]
                if not tail:
                    continue
                batch = tail
            sink = mailbox._sink
            assert sink is not None  # turning it off unparks the mailbox
            if sink.write(batch):
                continue
            # The sink has the rest of these bytes; the reader finishes them.
            del self.parked[mailbox]
            self.queued[mailbox] = None
            mailbox.wake()

    def unpark(self, mailbox: Mailbox) -> bool:
        """Return ``mailbox`` to the queued ones, with what it missed while parked.

        :returns: False if it was not parked (a flush unparked it, or it left).
        """
        last = self.parked.pop(mailbox, None)
        if last is None:
            return False
        if self.fresh:
            start = bisect.bisect_right(self.fresh_seqs, last)
            mailbox._items.extend(self.fresh[start:])
            if not self.parked:
                self.fresh, self.fresh_seqs = [], []
        self.queued[mailbox] = None
        return True


class Mailbox(Subscription):
    """A bounded per-client queue, woken by an event flag.

    The publisher sets the flag only when the reader is waiting for it, so a
    burst of events to a busy reader costs one wake-up, not one per event. With
    a direct sink, a waiting reader is not woken at all: a one-channel mailbox
    parks on its channel, and one of several channels schedules its own job.
    """

    __slots__ = (
        "_broker",
        "channels",
        "_items",
        "_wake",
        "_waiting",
        "_limit",
        "_closed",
        "_sink",
        "_flagged",
    )

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
        self._sink: DirectSink | None = None
        self._flagged = False  # a direct flush of this mailbox is scheduled

    def put(self, event: ServerSentEvent) -> bool:
        """Queue ``event``; return False, queueing nothing, if the client is full."""
        items = self._items
        if len(items) >= self._limit:
            return False
        items.append(event)
        if self._waiting:
            sink = self._sink
            if sink is None:
                self._waiting = False
                self._wake.set()
            elif not self._flagged:
                self._flagged = True
                if not sink.schedule(self._flush):
                    self.wake()
        return True

    def _flush(self) -> None:
        """The direct job of a mailbox that is not parked (it has several channels)."""
        with self._broker._lock:
            self._flagged = False
            sink = self._sink
            if not self._waiting or self._closed is not None or not self._items or sink is None:
                return
            batch, self._items = self._items, []
            if not sink.write(batch):
                self.wake()

    def finish(self, reason: SubscriptionClosed) -> bool:
        """Mark the mailbox ended; return False if it had ended already."""
        if self._closed is not None:
            return False
        self._closed = reason
        self._wake.set()
        return True

    def wake(self) -> None:
        self._waiting = False
        self._wake.set()

    def get(self, timeout: float | None = None) -> list[ServerSentEvent]:
        if not self._items and self._closed is None:
            park = self._sink is not None and len(self.channels) == 1
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

    def set_direct(self, sink: DirectSink | None) -> bool:
        with self._broker._lock:
            self._sink = sink
            if sink is None and self._broker._unpark_locked(self):
                self.wake()  # turned off from another thread while parked
        return True

    def close(self) -> None:
        with self._broker._lock:
            self._broker._drop(self, SubscriptionClosed("closed", reconnect=False))
