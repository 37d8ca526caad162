"""One client's subscription to the Redis broker: a bounded queue and its handover.

The process' listener (:mod:`._listener`) fills it; the client's request
thread drains it (:mod:`.._queue` has the queue both Redis brokers share).
"""

from __future__ import annotations

import typing as t

from ..._replay import BUDGET_REASON
from ...base import reset_event
from .._queue import QueuedSubscription
from .._scripts import ZERO, format_id

if t.TYPE_CHECKING:
    from ....event import ServerSentEvent
    from ..._replay import Spending
    from .._scripts import Key, Snapshot
    from ._listener import Listener


class RedisSubscription(QueuedSubscription["Listener", "tuple[Key, ServerSentEvent]"]):
    """One client's bounded queue, filled by the process' listener.

    Until :meth:`go_live` it only buffers what the listener announces, so the
    replay can be read after the client already receives live events.
    """

    def __init__(self, listener: Listener, channels: tuple[str, ...], limit: int) -> None:
        super().__init__(listener, channels, limit)
        self.connection = 0  # which of the listener's connections it started on
        # The newest id this client has (or never needs): later duplicates and
        # anything a catch-up returns up to here are skipped.
        self.last: Key = ZERO

    def deliver(self, channel: str, key: Key, event: ServerSentEvent) -> bool:
        """Queue a live event of ``channel``; return False if the client overflowed."""
        with self._lock:
            if self._closed is not None or self._pending is not None:
                return self._hold((key, event))
            if key <= self.last:
                return True
            if len(self._items) >= self._limit:
                return self._overflow()
            self._items.append(event)
            self.last = key
        self._notify()
        return True

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

    def catch_up(self, page: Snapshot, since: Key, spending: Spending) -> bool | None:
        """Queue one page of what was published while the listener was away, or a ``reset``.

        ``page`` holds the entries after ``since`` (or, on the first page, after
        each channel's oldest cursor) that are complete, and ``spending`` what
        is left of this client's replay budget: past it comes a ``reset``
        (reason ``"budget"``), as on a resume.

        :returns: True if the next page may hold more for it, None if it needs
            no more (caught up by a ``reset``, or closed), False if it overflowed.
        """
        with self._lock:
            if self._closed is not None:
                return None
            cursor = max(self.last, since)
            entries = page.after(cursor, self.channels)
            if self._pending is not None:
                # Still handing over: go_live() drops what the replay covers; past
                # the budget it ends, and the client resumes within the budget.
                if not all(spending.take(entry.event) for entry in entries):
                    return self._overflow()
                self._pending += [(entry.key, entry.event) for entry in entries]
                return True
            more: bool | None = True
            if not page.known(cursor, self.channels) or page.gap_after(cursor, self.channels):
                self._reset(page.head, "expired")
                more = None
            for entry in entries if more else ():
                if not spending.take(entry.event):
                    self._reset(page.head, BUDGET_REASON)
                    more = None
                    break
                if len(self._items) >= self._limit:
                    return self._overflow()
                self._items.append(entry.event)
                self.last = entry.key
        self._wake.set()
        return more

    def _reset(self, head: Key, reason: str) -> None:
        """Queue a ``reset`` to ``head``; the caller holds the lock."""
        self._items.append(reset_event(format_id(self.last), format_id(head), reason))
        self.last = head
