"""One client's subscription to the cluster broker: a bounded queue, a position per channel.

The process' listener (:mod:`._listener`) fills it from the shards'
connections; the client's request thread drains it with :meth:`get`. Each
channel's position is the newest id of that channel the client has (or never
needs), so a late event of one shard never hides an earlier one of another,
and the SSE id it carries is the composite cursor of all positions.
"""

from __future__ import annotations

import typing as t

from ..._replay import BUDGET_REASON
from ...base import reset_event
from .._queue import QueuedSubscription
from .._scripts import ZERO
from ._cursor import ChannelRead, verdict, wire_id

if t.TYPE_CHECKING:
    from ....event import ServerSentEvent
    from ..._replay import Spending
    from .._scripts import Key
    from ._listener import ClusterListener

#: A live or replayed event: its channel, its entry id, the event.
Item: t.TypeAlias = "tuple[str, Key, ServerSentEvent]"


class ClusterSubscription(QueuedSubscription["ClusterListener", Item]):
    """One client's bounded queue, filled by the process' cluster listener.

    Until :meth:`go_live` it only buffers, so the replay can be read after the
    client already receives live events.
    """

    def __init__(self, listener: ClusterListener, channels: tuple[str, ...], limit: int) -> None:
        super().__init__(listener, channels, limit)  # sorted: the order of the cursor's positions
        self._index = {name: i for i, name in enumerate(channels)}
        self.positions: list[Key] = [ZERO] * len(channels)

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

    def deliver(self, channel: str, key: Key, event: ServerSentEvent) -> bool:
        """Queue a live event; return False if the client overflowed."""
        with self._lock:
            if self._closed is not None or self._pending is not None:
                return self._hold((channel, key, event))
            if not self._append(channel, key, event):
                return False
        self._notify()
        return True

    def go_live(
        self,
        first: list[ServerSentEvent],
        backlog: list[Item],
        starts: list[Key],
        through: list[Key],
        last: list[ServerSentEvent] | None = None,
    ) -> bool:
        """Queue ``first`` (a reset), the replay, ``last`` (a reset), then the buffered live events.

        ``starts`` are the positions the replay starts after (the cursor's),
        ``through`` per channel the newest id the replay covers: the client's
        cursor moves from one to the other as the replay is sent, and ``last``
        (a replay cut at its budget) carries the cursor of ``through``.
        """
        with self._lock:
            pending = self._pending
            if self._closed is not None or pending is None:
                return self._closed is None
            self._items.extend(first)
            self.positions = list(starts)
            for channel, key, event in backlog:
                self._append(channel, key, event, bounded=False)
            self._items.extend(last or ())
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

    def catch_up(self, channel: str, read: ChannelRead, spending: Spending) -> bool | None:
        """Queue one page of what ``channel`` published while its shard was away, or a ``reset``.

        ``read`` holds the channel's entries from a position at or before this
        client's (inclusive), and ``spending`` what is left of its replay
        budget: past it comes a ``reset`` (reason ``"budget"``), as on a resume.

        :returns: True if the next page may hold more for it, None if it needs
            no more (caught up by a ``reset``, or closed), False if it overflowed.
        """
        with self._lock:
            if self._closed is not None:
                return None
            index = self._index[channel]
            start = self.positions[index]
            entries = [entry for entry in read.entries if entry.key > start]
            if not entries and read.entries and read.entries[-1].key != read.tail:
                return True  # it is ahead of this page
            if self._pending is not None:
                # Still handing over: go_live() drops what the replay covers; past
                # the budget it ends, and the client resumes within the budget.
                if not all(spending.take(entry.event) for entry in entries):
                    return self._overflow()
                self._pending += [(channel, e.key, e.event) for e in entries]
                return True
            if verdict(start, read, strict=True) != "ok":
                self._reset(index, read, "expired")
                return None
            for entry in entries:
                if not spending.take(entry.event):
                    self._reset(index, read, BUDGET_REASON)
                    return None
                if not self._append(channel, entry.key, entry.event):
                    return False
        self._wake.set()
        return True

    def _reset(self, index: int, read: ChannelRead, reason: str) -> None:
        """Move one channel's position to its newest entry, with a ``reset``; the
        caller holds the lock."""
        before = wire_id(self.positions)
        self.positions[index] = read.tail or ZERO
        self._items.append(reset_event(before, wire_id(self.positions), reason))
        self._wake.set()
