"""Short-lived records of the workers that share a broker: :class:`WorkerRecords`.

Each worker keeps one record (its presence and stats, see
:mod:`flask_sse_push.presence`) under its own name, with a time to live it
renews on every heartbeat. A worker that dies without a word (``kill -9``, a
lost host) leaves a record that expires when the time runs out.
"""

from __future__ import annotations

import abc


class WorkerRecords(abc.ABC):
    """Named text records with a time to live, shared by every worker of a broker.

    A broker offers them through
    :meth:`~flask_sse_push.brokers.base.Broker.worker_records`. Every method
    raises :class:`~flask_sse_push.exceptions.BrokerError` when the backend
    cannot be reached.

    .. versionadded:: 0.1
    """

    __slots__ = ()

    @abc.abstractmethod
    def put(self, worker: str, value: str, ttl: float) -> None:
        """Write ``worker``'s record, to expire ``ttl`` seconds from now."""

    @abc.abstractmethod
    def remove(self, worker: str) -> None:
        """Delete ``worker``'s record at once (a worker that stops cleanly)."""

    @abc.abstractmethod
    def read(self) -> dict[str, str]:
        """Return every record that has not expired, by worker name."""
