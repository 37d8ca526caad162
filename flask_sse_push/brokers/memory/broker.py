"""The default broker: fan-out inside one process, with a bounded history.

It uses :mod:`threading` primitives only. Under gunicorn's gevent worker they are
monkey-patched into cooperative ones; under a threaded server they are real.
Delivery is per process: with several workers, use the Redis broker.
"""

from __future__ import annotations

import os
import typing as t

from .._replay import ReplayBudget
from ..base import Broker, Subscription
from ._state import Incarnation

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from ...event import ServerSentEvent


class MemoryBroker(Broker):
    """Fan-out within this process, with per-channel history for resume.

    Ids look like ``"<epoch>-<n>"``: ``n`` counts up across all channels, and
    each process that uses the broker gets an epoch of its own. So a worker
    forked from a master that made the broker (``gunicorn --preload``), a
    worker that replaced a crashed or recycled one (``--max-requests``), or a
    restarted server never issues an id an earlier one issued, and a cursor
    from before is recognised as unknown (and answered with ``reset``) instead
    of being matched to a different event. A forked process starts empty: the
    parent's history and subscriptions stay the parent's.

    A cursor is looked up only within the channels a stream subscribes to: an
    explicit id (``publish(..., id=...)``) resumes only a stream that includes
    its channel, and is ``unknown`` elsewhere. An id of the broker's own form
    is a position in the one sequence, valid on every channel.

    It keeps what replay needs and no more: per channel at most ``history``
    events, and a channel with no subscribers and an empty history costs
    nothing. A forgotten channel still answers an old cursor with ``reset``.

    :param history: events kept per channel for replay.
    :param queue_size: events a client may fall behind by before it is
        disconnected (it then resumes through the replay).
    :param replay_budget: how much one resume may replay; past it the client
        gets what fits, then a ``reset`` (reason ``"budget"``).

    .. versionadded:: 0.1
    """

    process_local = True

    def __init__(
        self,
        *,
        history: int = 1000,
        queue_size: int = 1000,
        replay_budget: ReplayBudget | None = None,
    ) -> None:
        if history < 0 or queue_size < 1:
            raise ValueError(
                "MemoryBroker needs history >= 0 and queue_size >= 1"
                f" (got history={history}, queue_size={queue_size})."
            )
        self.history = history
        self.queue_size = queue_size
        self.replay_budget = (replay_budget or ReplayBudget()).check()
        self._incarnations = {os.getpid(): self._incarnation()}

    def _incarnation(self) -> Incarnation:
        return Incarnation(self.history, self.queue_size, self.replay_budget)

    def _here(self) -> Incarnation:
        """This process' state, made afresh on first use after a fork.

        What a child inherits is the parent's: its lock may be held by a thread
        that does not exist here, and its clients are served there. A pid check
        (not ``os.register_at_fork``) also sees servers that fork without
        running Python's fork hooks, and makes the new lock after gevent's
        monkey-patching in the worker.
        """
        pid = os.getpid()
        state = self._incarnations.get(pid)
        if state is None:
            # setdefault is atomic: threads racing here all get one winner,
            # which every later dict holds too.
            state = self._incarnations.setdefault(pid, self._incarnation())
            self._incarnations = {pid: state}
        return state

    def publish(self, channel: str, event: ServerSentEvent) -> str:
        return self._here().publish(channel, event)

    def subscribe(
        self, channels: Sequence[str], *, last_event_id: str | None = None
    ) -> Subscription:
        return self._here().subscribe(channels, last_event_id)

    def cursor(self, channels: Sequence[str]) -> str:
        return self._here().cursor()

    def subscriber_count(self) -> int:
        return self._here().subscriber_count()

    def close(self) -> None:
        self._here().close()
