"""The default broker: fan-out inside one process, with a bounded history.

It uses :mod:`threading` primitives only. Under gunicorn's gevent worker they are
monkey-patched into cooperative ones; under a threaded server they are real.
Delivery is per process: with several workers, use the Redis broker.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import typing as t

from ..exceptions import SubscriptionClosed
from .base import Broker, Subscription, reset_event

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..event import ServerSentEvent

_epochs = itertools.count(int(time.time() * 1000))


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rem = divmod(number, 36)
        out = digits[rem] + out
        if not number:
            return out


class _Channel:
    __slots__ = ("history", "subscribers", "trimmed_through")

    def __init__(self, size: int) -> None:
        self.history: collections.deque[tuple[int, ServerSentEvent]] = collections.deque(
            maxlen=size
        )
        # Copy-on-write: publish iterates the tuple it read, with no lock held
        # by the subscriber set itself.
        self.subscribers: tuple[_Mailbox, ...] = ()
        self.trimmed_through = 0


class _Mailbox(Subscription):
    """A bounded per-client queue, woken by an event flag.

    The publisher sets the flag only when the reader is waiting for it, so a
    burst of events to a busy reader costs one wake-up, not one per event. With
    direct delivery on (:meth:`set_direct`), a waiting reader is not woken at
    all: the publisher calls ``ready()`` once, and the events are taken for it.
    """

    __slots__ = (
        "_broker",
        "channels",
        "_items",
        "_wake",
        "_waiting",
        "_limit",
        "_closed",
        "_ready",
        "_flagged",
    )

    def __init__(self, broker: MemoryBroker, channels: Sequence[str], limit: int):
        self._broker = broker
        self.channels = tuple(channels)
        # A list, not a deque: it is swapped out whole, and an empty list is a
        # tenth of an empty deque's size, which counts with 10,000s of clients.
        self._items: list[ServerSentEvent] = []
        self._wake = threading.Event()
        self._waiting = False
        self._limit = limit
        self._closed: SubscriptionClosed | None = None
        self._ready: Callable[[], None] | None = None
        self._flagged = False  # ready() was called and take() has not run since

    def put(self, event: ServerSentEvent) -> bool:
        """Queue ``event``; return False, queueing nothing, if the client is full."""
        items = self._items
        if len(items) >= self._limit:
            return False
        items.append(event)
        if self._waiting:
            ready = self._ready
            if ready is None:
                self._waiting = False
                self._wake.set()
            elif not self._flagged:
                self._flagged = True
                ready()
        return True

    def finish(self, reason: SubscriptionClosed) -> bool:
        """Mark the mailbox ended; return False if it had ended already."""
        if self._closed is not None:
            return False
        self._closed = reason
        self._wake.set()
        return True

    def get(self, timeout: float | None = None) -> list[ServerSentEvent]:
        if not self._items and self._closed is None:
            # Announce the wait before looking again, so a put in between
            # either is seen here or sets the flag.
            self._wake.clear()
            self._flagged = False
            self._waiting = True
            if not self._items and self._closed is None:
                self._wake.wait(timeout)
            self._waiting = False
        if self._closed is not None:
            raise self._closed
        if not self._items:
            return []
        with self._broker._lock:  # publishers append under this lock
            batch, self._items = self._items, []
        return batch

    def pending(self) -> int:
        return len(self._items)

    def set_direct(self, ready: Callable[[], None] | None) -> bool:
        self._ready = ready
        return True

    def take(self) -> list[ServerSentEvent]:
        if not self._waiting or self._closed is not None or not self._items:
            return []
        self._flagged = False
        with self._broker._lock:
            batch, self._items = self._items, []
        return batch

    def wake(self) -> None:
        self._waiting = False
        self._wake.set()

    def close(self) -> None:
        with self._broker._lock:
            if self.finish(SubscriptionClosed("closed", reconnect=False)):
                self._broker._detach(self)


class MemoryBroker(Broker):
    """Fan-out within this process, with per-channel history for resume.

    Ids look like ``"<epoch>-<n>"``: ``n`` counts up across all channels, and the
    epoch changes whenever a broker is created, so a cursor from before a
    restart is recognised as unknown (and answered with ``reset``) instead of
    being matched to a different event.

    :param history: events kept per channel for replay.
    :param queue_size: events a client may fall behind by before it is
        disconnected (it then resumes through the replay).

    .. versionadded:: 0.1
    """

    def __init__(self, *, history: int = 1000, queue_size: int = 1000) -> None:
        if history < 0 or queue_size < 1:
            raise ValueError(
                "MemoryBroker needs history >= 0 and queue_size >= 1"
                f" (got history={history}, queue_size={queue_size})."
            )
        self.history = history
        self.queue_size = queue_size
        self._epoch = _base36(next(_epochs))
        self._lock = threading.Lock()
        self._seq = 0
        self._channels: dict[str, _Channel] = {}
        self._user_ids: dict[str, int] = {}
        self._count = 0

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(self.history)
        return channel

    def _id(self, seq: int) -> str:
        return f"{self._epoch}-{seq}"

    def _seq_of(self, event_id: str) -> int | None:
        seq = self._user_ids.get(event_id)
        if seq is not None:
            return seq
        epoch, _, number = event_id.partition("-")
        if epoch == self._epoch and number.isdigit() and number.isascii():
            value = int(number)
            if value <= self._seq:
                return value
        return None

    def publish(self, channel: str, event: ServerSentEvent) -> str:
        with self._lock:
            self._seq = seq = self._seq + 1
            if event.id is None:
                event = event.replace(id=self._id(seq))
            else:
                self._user_ids[event.id] = seq
            state = self._channel(channel)
            history = state.history
            if self.history:
                if len(history) == history.maxlen:
                    old_seq, old = history[0]
                    state.trimmed_through = old_seq
                    if old.id is not None and self._user_ids.get(old.id) == old_seq:
                        del self._user_ids[old.id]
                history.append((seq, event))
            else:
                state.trimmed_through = seq
            for mailbox in state.subscribers:
                if not mailbox.put(event):
                    mailbox.finish(SubscriptionClosed("overflow"))
                    self._detach(mailbox)
        assert event.id is not None
        return event.id

    def subscribe(
        self, channels: Sequence[str], *, last_event_id: str | None = None
    ) -> Subscription:
        mailbox = _Mailbox(self, channels, self.queue_size)
        with self._lock:
            states = [self._channel(name) for name in mailbox.channels]
            if last_event_id is not None:
                self._replay(mailbox, states, last_event_id)
            for state in states:
                state.subscribers = (*state.subscribers, mailbox)
            self._count += 1
        return mailbox

    def _replay(self, mailbox: _Mailbox, states: list[_Channel], last_event_id: str) -> None:
        seq = self._seq_of(last_event_id)
        if seq is None:
            reason = "unknown"
        elif any(state.trimmed_through > seq for state in states):
            reason = "expired"
        else:
            backlog = [entry for state in states for entry in state.history if entry[0] > seq]
            backlog.sort(key=lambda entry: entry[0])
            mailbox._items.extend(event for _, event in backlog)
            return
        mailbox._items.append(reset_event(last_event_id, self._id(self._seq), reason))

    def _detach(self, mailbox: _Mailbox) -> None:
        """Remove ``mailbox`` from its channels; the caller holds the lock."""
        for name in mailbox.channels:
            state = self._channels[name]
            state.subscribers = tuple(m for m in state.subscribers if m is not mailbox)
            if not state.subscribers and not state.history and not state.trimmed_through:
                # Never published to: forget it, so clients cannot grow this dict
                # by subscribing to made-up names.
                del self._channels[name]
        self._count -= 1

    def cursor(self, channels: Sequence[str]) -> str:
        return self._id(self._seq)

    def subscriber_count(self) -> int:
        return self._count

    def close(self) -> None:
        with self._lock:
            mailboxes = {m for s in self._channels.values() for m in s.subscribers}
            for mailbox in mailboxes:
                if mailbox.finish(SubscriptionClosed("broker closed")):
                    self._detach(mailbox)
