"""The memory broker's state in one process: its ids, channels and subscriptions.

A process that can issue ids gets its own :class:`Incarnation`, with an epoch no
earlier process had (see :func:`new_epoch`), so ids never repeat within a
deployment, across forked, restarted or recycled workers.

Memory is bounded by what replay needs: a channel costs something only while it
has subscribers or events in its history. When a channel is forgotten, how far
its history had been trimmed goes into :attr:`Incarnation.forgotten`, a fixed
table of watermarks shared by every channel whose name hashes to the same slot.
A channel made again starts from its slot's watermark, so a cursor older than
what was forgotten still gets ``reset`` (``expired``): the table may reset a
client that missed nothing, never let one skip events unseen.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import os
import secrets
import threading
import time
import typing as t

from ...exceptions import SubscriptionClosed
from .._replay import BUDGET_REASON, ReplayBudget, Spending
from ..base import reset_event
from ._channel import Channel, Mailbox

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from ...event import ServerSentEvent

#: Slots of :attr:`Incarnation.forgotten`: more slots, fewer needless resets.
FORGOTTEN_SLOTS = 1024

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    out = ""
    while True:
        number, rem = divmod(number, 36)
        out = _DIGITS[rem] + out
        if not number:
            return out


def new_epoch() -> str:
    """Return an epoch no other process issuing ids has had, in base 36.

    It packs the wall clock in milliseconds (41 bits), the process id (22 bits,
    Linux' largest ``pid_max``) and 24 random bits. Two live processes never
    share a pid, and a pid is not reused within the millisecond its process
    died, so on one host two incarnations collide only if the clock goes back
    and the pid repeats; the random bits cover that and other hosts.
    """
    ms = time.time_ns() // 1_000_000
    pid = os.getpid() & 0x3FFFFF
    return _base36((((ms << 22) | pid) << 24) | secrets.randbits(24))


class Incarnation:
    """The memory broker's state in one process; see the module docstring.

    Mailboxes and channels call its ``_``-methods; they run under ``_lock``
    unless said otherwise.
    """

    def __init__(
        self, history: int, queue_size: int, replay_budget: ReplayBudget | None = None
    ) -> None:
        self.history = history
        self.queue_size = queue_size
        self.replay_budget = replay_budget or ReplayBudget()
        self.epoch = new_epoch()
        self._lock = threading.Lock()
        self._seq = 0
        self._channels: dict[str, Channel] = {}
        self._count = 0
        #: Per slot, the highest ``trimmed_through`` of a channel forgotten there.
        self.forgotten = [0] * FORGOTTEN_SLOTS

    def _channel(self, name: str) -> Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = Channel(self.history)
            channel.trimmed_through = self.forgotten[hash(name) % FORGOTTEN_SLOTS]
        return channel

    def _forget(self, name: str, trimmed_through: int) -> None:
        slot = hash(name) % FORGOTTEN_SLOTS
        if trimmed_through > self.forgotten[slot]:
            self.forgotten[slot] = trimmed_through

    def _id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def _seq_of(self, event_id: str, states: list[Channel]) -> int | None:
        """The position of ``event_id`` as seen from ``states`` (the subscribed channels).

        Ids of this incarnation's own form are positions in its one sequence:
        they tell nothing about a channel. Any other id counts only where one
        of ``states`` still has its event, so a cursor cannot probe channels the
        stream did not subscribe to.
        """
        epoch, _, number = event_id.partition("-")
        if epoch == self.epoch and number.isdigit() and number.isascii():
            value = int(number)
            return value if value <= self._seq else None
        found: int | None = None
        for state in states:
            for seq, event in reversed(state.history):
                if event.id == event_id:
                    if found is None or seq > found:
                        found = seq
                    break
        return found

    def publish(self, channel: str, event: ServerSentEvent) -> str:
        with self._lock:
            self._seq = seq = self._seq + 1
            if event.id is None:
                event = event.replace(id=self._id(seq))
            state = self._channels.get(channel)
            if state is None and not self.history:
                # Nobody listens and nothing is kept: only the gap is remembered.
                self._forget(channel, seq)
            else:
                state = state or self._channel(channel)
                if self.history:
                    state.keep(seq, event)
                else:
                    state.trimmed_through = seq
                state.deliver(self, seq, event)
        assert event.id is not None
        return event.id

    def subscribe(self, channels: Sequence[str], last_event_id: str | None) -> Mailbox:
        mailbox = Mailbox(self, channels, self.queue_size)
        with self._lock:
            states = [self._channel(name) for name in mailbox.channels]
            if last_event_id is not None:
                self._replay(mailbox, states, last_event_id)
            else:
                mailbox.start_id = self._id(self._seq)
            for state in states:
                state.queued[mailbox] = None
            self._count += 1
        return mailbox

    def _replay(self, mailbox: Mailbox, states: list[Channel], last_event_id: str) -> None:
        seq = self._seq_of(last_event_id, states)
        if seq is None:
            reason = "unknown"
        elif any(state.trimmed_through > seq for state in states):
            reason = "expired"
        else:
            # Each history is in seq order: merge lazily from the cursor on, so
            # the work (under the lock) and the memory are the budget's, not
            # the histories'.
            spending = Spending(self.replay_budget)
            after = [
                itertools.islice(
                    state.history,
                    bisect.bisect_right(state.history, seq, key=lambda entry: entry[0]),
                    None,
                )
                for state in states
                if state.history and state.history[-1][0] > seq
            ]
            items = mailbox._items
            for _, event in heapq.merge(*after, key=lambda entry: entry[0]):
                if not spending.take(event):
                    # What fits was sent; the reset moves the cursor to now.
                    items.append(reset_event(last_event_id, self._id(self._seq), BUDGET_REASON))
                    return
                items.append(event)
            return
        mailbox._items.append(reset_event(last_event_id, self._id(self._seq), reason))

    def cursor(self) -> str:
        return self._id(self._seq)

    def subscriber_count(self) -> int:
        return self._count

    def close(self) -> None:
        with self._lock:
            mailboxes = {m for s in self._channels.values() for m in s.mailboxes()}
            for mailbox in mailboxes:
                self._drop(mailbox, SubscriptionClosed("broker closed"))

    # Called by mailboxes and channels (see ._channel).

    def _park(self, mailbox: Mailbox) -> None:
        """Park ``mailbox`` in its channel's lot while its reader waits with a consumer."""
        with self._lock:
            self._park_locked(mailbox)

    def _park_locked(self, mailbox: Mailbox) -> None:
        state = self._channels.get(mailbox.channels[0])
        if state is not None and mailbox in state.queued:  # not dropped meanwhile
            del state.queued[mailbox]
            state.lot.parked[mailbox] = self._seq

    def _unpark(self, mailbox: Mailbox) -> None:
        """Take the lock itself."""
        with self._lock:
            self._unpark_locked(mailbox)

    def _unpark_locked(self, mailbox: Mailbox) -> bool:
        if len(mailbox.channels) != 1:
            return False
        state = self._channels.get(mailbox.channels[0])
        return state is not None and state.unpark(mailbox)

    def _flush(self, state: Channel) -> None:
        """Take the lock itself."""
        with self._lock:
            state.flush()

    def _drop(self, mailbox: Mailbox, reason: SubscriptionClosed) -> None:
        """End ``mailbox`` for ``reason``."""
        if mailbox.finish(reason):
            self._detach(mailbox)

    def _detach(self, mailbox: Mailbox) -> None:
        """Remove ``mailbox`` from its channels, forgetting those it leaves empty."""
        for name in mailbox.channels:
            state = self._channels[name]
            state.queued.pop(mailbox, None)
            state.lot.parked.pop(mailbox, None)
            if state.empty() and not state.history:
                # Nothing to replay and no one to deliver to: it costs nothing
                # from now on, and made-up names cannot grow this dict.
                del self._channels[name]
                self._forget(name, state.trimmed_through)
        self._count -= 1
