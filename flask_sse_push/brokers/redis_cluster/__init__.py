"""Where :class:`RedisClusterBroker` is imported from; it lives in ``brokers/redis/cluster/``."""

from __future__ import annotations

from ..redis.cluster import broker as _broker
from ..redis.cluster.broker import RedisClusterBroker
from ..redis.cluster.broker import parse_cluster_url as parse_cluster_url

__all__ = ["SCHEMES", "RedisClusterBroker"]

#: URL schemes that name a Redis Cluster.
SCHEMES = _broker.SCHEMES
