"""Handing events to a consumer while a subscription's reader waits.

A reader waits in :meth:`~flask_sse_push.brokers.Subscription.get`. Waking it
for every batch costs a switch into its thread or greenlet and back; with
thousands of readers that is most of a broadcast's time. A :class:`Consumer`
given to :meth:`~flask_sse_push.brokers.Subscription.set_consumer` takes the
events instead, while the reader sleeps on. To the broker a consumer is only
two callables, so brokers know nothing of what it does with the events (the
stream runtime writes them out, see :mod:`flask_sse_push.servers.fastpath`).

- :class:`ParkingLot` is one channel's waiting readers: the publisher adds each
  event once, and one deferred job per channel hands the same list to every
  parked reader's consumer. Fan-out then costs one append per event and one
  call per reader.
- A subscription that keeps its own queue (several channels, or the Redis
  broker's) defers a job of its own, once per batch (:func:`defer_once`).
"""

from __future__ import annotations

import bisect
import typing as t

if t.TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from ..event import ServerSentEvent


class Consumer(t.Protocol):
    """What takes a subscription's events while its reader waits.

    .. versionadded:: 0.1
    """

    def defer(self, job: Callable[[], None]) -> bool:
        """Run ``job`` soon, once the current publisher yields.

        :returns: False if it cannot be deferred from this thread; the caller
            then wakes the reader instead.
        """

    def take(self, events: list[ServerSentEvent]) -> bool:
        """Take ``events`` now, without blocking; only from a deferred job.

        Every consumer that gets the same events gets the same list object, so
        it can do its work once for all of them. The list must not change.

        :returns: False if it took only part of them, or none: the reader must
            then be woken, and finishes what the consumer started.
        """


class Parked(t.Protocol):
    """A reader that may park: it has a consumer while it waits."""

    @property
    def consumer(self) -> Consumer | None: ...


_R = t.TypeVar("_R", bound=Parked)


class ParkingLot(t.Generic[_R]):
    """One channel's parked readers, and the events for them since the last hand-off.

    Its methods run under the broker's lock.
    """

    __slots__ = ("parked", "fresh", "fresh_seqs", "due")

    def __init__(self) -> None:
        #: Parked readers, with the last seq each had when it parked.
        self.parked: dict[_R, int] = {}
        #: Events for the parked readers since the last hand-off, and their seqs.
        self.fresh: list[ServerSentEvent] = []
        self.fresh_seqs: list[int] = []
        #: A hand-off job is deferred already.
        self.due = False

    def add(self, seq: int, event: ServerSentEvent) -> int:
        """Keep ``event`` for the parked readers; return how many are waiting now."""
        self.fresh.append(event)
        self.fresh_seqs.append(seq)
        return len(self.fresh)

    def defer(self, job: Callable[[], None]) -> bool:
        """Have ``job`` (which calls :meth:`hand_off`) run once the publisher yields.

        :returns: False if it could not be deferred: wake the parked readers.
        """
        if self.due:
            return True
        consumer = next(iter(self.parked)).consumer
        assert consumer is not None  # a reader without one never parks
        self.due = consumer.defer(job)
        return self.due

    def hand_off(self) -> list[_R]:
        """Hand what is fresh to every parked reader's consumer.

        :returns: the readers whose consumer took only part: they are unparked,
            and must be woken to finish.
        """
        self.due = False
        fresh, seqs = self.fresh, self.fresh_seqs
        if not fresh:
            return []
        self.fresh, self.fresh_seqs = [], []
        first = seqs[0]
        tails: dict[int, list[ServerSentEvent]] = {}
        lagging = []
        for reader, last in tuple(self.parked.items()):
            batch = fresh
            if last >= first:  # parked after some of these: it has them already
                tail = tails.get(last)
                if tail is None:
                    tail = tails[last] = fresh[bisect.bisect_right(seqs, last) :]
                if not tail:
                    continue
                batch = tail
            # Never None here: taking it away unparks the reader.
            if not reader.consumer.take(batch):  # type: ignore[union-attr]
                del self.parked[reader]
                lagging.append(reader)
        return lagging

    def unpark(self, reader: _R) -> list[ServerSentEvent] | None:
        """Remove ``reader``; return what it missed while parked.

        :returns: ``None`` if it was not parked (a hand-off unparked it, or it left).
        """
        last = self.parked.pop(reader, None)
        if last is None:
            return None
        missed: list[ServerSentEvent] = []
        if self.fresh:
            missed = self.fresh[bisect.bisect_right(self.fresh_seqs, last) :]
            if not self.parked:
                self.fresh, self.fresh_seqs = [], []
        return missed


class Waking:
    """How a subscription wakes its reader: the one waiting in ``get()`` on
    ``_wake``, or, once it parked (``Subscription.park``), the ``_on_wake``
    callback, called once until the reader comes back."""

    _waiting: bool
    _on_wake: Callable[[], None] | None
    _wake: threading.Event

    def wake(self) -> None:
        """Wake the reader: the one waiting in ``get()``, or whoever parked it."""
        waiting, self._waiting = self._waiting, False
        on_wake = self._on_wake
        if on_wake is None:
            self._wake.set()
        elif waiting:
            on_wake()


def defer_once(consumer: Consumer, deferred: bool, job: Callable[[], None]) -> bool:
    """Defer a subscription's own hand-off job unless one is deferred already.

    :param deferred: whether the subscription's job is deferred already.
    :returns: the new value of that flag; False means the job could not be
        deferred, and the caller wakes its reader instead.
    """
    return deferred or consumer.defer(job)
