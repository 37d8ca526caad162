"""Workers' records on Redis and Redis Cluster: :class:`RedisWorkerRecords`.

A record expires by the server's clock, so readers never need the writer's.
On Redis the record is a string key with a millisecond TTL, and a set lists the
names; a name whose key has expired is dropped from the set by the next reader.
Both keys carry one hash tag, so on Redis Cluster they share a slot and a read
is one ``SMEMBERS`` and one ``MGET`` on one node.
"""

from __future__ import annotations

import typing as t

import redis
from redis.exceptions import RedisClusterException

from ...exceptions import BrokerError
from ...validation import RESERVED_CHANNEL_PREFIX
from ..records import WorkerRecords

if t.TYPE_CHECKING:
    from collections.abc import Callable

#: The hash tag of the records' keys: a reserved channel name, so no channel's
#: keys can ever be the same (see
#: :data:`~flask_sse_push.validation.RESERVED_CHANNEL_PREFIX`).
RECORDS_TAG = RESERVED_CHANNEL_PREFIX + "records"

#: What redis-py raises: its own errors, socket errors, and the cluster client's.
_ERRORS = (redis.RedisError, OSError, RedisClusterException)


class RedisWorkerRecords(WorkerRecords):
    """Records of named workers in Redis or Redis Cluster, each with a TTL.

    :param client: opens a use of the redis-py client of the calling thread (a
        ``redis.Redis`` or a ``redis.cluster.RedisCluster``): a context manager,
        so a broker that bounds its connections (the cluster's slots) counts
        these commands too.
    :param tag: the start of every key, holding a cluster hash tag, such as
        ``"sse:{flask-sse-push:records}"``.

    Every method raises :class:`~flask_sse_push.exceptions.BrokerError` when
    Redis cannot be reached.
    """

    __slots__ = ("_client", "_index", "_tag")

    def __init__(self, client: Callable[[], t.ContextManager[t.Any]], tag: str) -> None:
        self._client = client
        self._index = f"{tag}:workers"
        self._tag = tag

    def _key(self, worker: str) -> str:
        return f"{self._tag}:worker:{worker}"

    def put(self, worker: str, value: str, ttl: float) -> None:
        """Write ``worker``'s record, to expire ``ttl`` seconds from now."""
        try:
            with self._client() as client:
                client.set(self._key(worker), value, px=max(1, int(ttl * 1000)))
                client.sadd(self._index, worker)
        except _ERRORS as exc:
            raise BrokerError(f"Could not write this worker's record to Redis: {exc}") from exc

    def remove(self, worker: str) -> None:
        """Delete ``worker``'s record at once (a worker that stops cleanly)."""
        try:
            with self._client() as client:
                client.delete(self._key(worker))
                client.srem(self._index, worker)
        except _ERRORS as exc:
            raise BrokerError(f"Could not delete this worker's record in Redis: {exc}") from exc

    def read(self) -> dict[str, str]:
        """Return every live record, by worker name; forget expired names."""
        try:
            with self._client() as client:
                names = sorted(_text(name) for name in client.smembers(self._index))
                if not names:
                    return {}
                values = client.mget([self._key(name) for name in names])
                gone = [name for name, value in zip(names, values, strict=True) if value is None]
                if gone:
                    client.srem(self._index, *gone)
        except _ERRORS as exc:
            raise BrokerError(f"Could not read the workers' records from Redis: {exc}") from exc
        return {
            name: _text(value)
            for name, value in zip(names, values, strict=True)
            if value is not None
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
