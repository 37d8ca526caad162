# Where RedisClusterBroker is imported from; it lives in brokers/redis/cluster/.

from __future__ import annotations

from ..redis.cluster import broker as _broker
from ..redis.cluster.broker import ACL_COMMANDS as ACL_COMMANDS
from ..redis.cluster.broker import RedisClusterBroker
from ..redis.cluster.broker import parse_cluster_url as parse_cluster_url

__all__ = ["SCHEMES", "RedisClusterBroker"]

# Its documentation is the broker module's.
__doc__ = _broker.__doc__

#: URL schemes that name a Redis Cluster.
SCHEMES = _broker.SCHEMES
