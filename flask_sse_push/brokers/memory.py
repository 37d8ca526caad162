"""The default broker: fan-out inside one process, with a bounded history.

It uses :mod:`threading` primitives only. Under gunicorn's gevent worker they are
monkey-patched into cooperative ones; under a threaded server they are real.
Delivery is per process: with several workers, use the Redis broker.
"""

from __future__ import annotations

import itertools
import threading
import time
import typing as t

from ..exceptions import SubscriptionClosed
from ._memory_channel import Channel, Mailbox
from .base import Broker, Subscription, reset_event

if t.TYPE_CHECKING:
    from collections.abc import Sequence

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
        self._channels: dict[str, Channel] = {}
        self._user_ids: dict[str, int] = {}
        self._count = 0

    def _channel(self, name: str) -> Channel:
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = Channel(self.history)
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
            state.deliver(self, seq, event)
        assert event.id is not None
        return event.id

    def subscribe(
        self, channels: Sequence[str], *, last_event_id: str | None = None
    ) -> Subscription:
        mailbox = Mailbox(self, channels, self.queue_size)
        with self._lock:
            states = [self._channel(name) for name in mailbox.channels]
            if last_event_id is not None:
                self._replay(mailbox, states, last_event_id)
            for state in states:
                state.queued[mailbox] = None
            self._count += 1
        return mailbox

    def _replay(self, mailbox: Mailbox, states: list[Channel], last_event_id: str) -> None:
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

    # Called by mailboxes and channels (see ._memory_channel).

    def _park(self, mailbox: Mailbox) -> None:
        """Let the channel deliver to ``mailbox`` directly while its reader waits."""
        with self._lock:
            state = self._channels[mailbox.channels[0]]
            if mailbox in state.queued:  # not dropped meanwhile
                del state.queued[mailbox]
                state.parked[mailbox] = self._seq

    def _unpark(self, mailbox: Mailbox) -> None:
        with self._lock:
            self._unpark_locked(mailbox)

    def _unpark_locked(self, mailbox: Mailbox) -> bool:
        if len(mailbox.channels) != 1:
            return False
        state = self._channels.get(mailbox.channels[0])
        return state is not None and state.unpark(mailbox)

    def _flush(self, state: Channel) -> None:
        with self._lock:
            state.flush()

    def _drop(self, mailbox: Mailbox, reason: SubscriptionClosed) -> None:
        """End ``mailbox`` for ``reason``; the caller holds the lock."""
        if mailbox.finish(reason):
            self._detach(mailbox)

    def _detach(self, mailbox: Mailbox) -> None:
        """Remove ``mailbox`` from its channels; the caller holds the lock."""
        for name in mailbox.channels:
            state = self._channels[name]
            state.queued.pop(mailbox, None)
            state.parked.pop(mailbox, None)
            if state.empty() and not state.history and not state.trimmed_through:
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
            mailboxes = {m for s in self._channels.values() for m in s.mailboxes()}
            for mailbox in mailboxes:
                self._drop(mailbox, SubscriptionClosed("broker closed"))
