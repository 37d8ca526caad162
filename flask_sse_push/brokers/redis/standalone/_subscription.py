"""One client's subscription to the Redis broker: a bounded queue and its handover.

The process' listener (:mod:`._listener`) fills it; the client's request
thread drains it (:mod:`.._queue` has the queue both Redis brokers share).
"""

from __future__ import annotations

import typing as t

from ...base import reset_event
from .._queue import QueuedSubscription
from .._scripts import ZERO, format_id

if t.TYPE_CHECKING:
    from ....event import ServerSentEvent
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
            if not snapshot.known(last, self.channels) or snapshot.gap_after(last, self.channels):
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
