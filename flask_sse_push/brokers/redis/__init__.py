# The Redis brokers, and what the two share:
# - standalone/: RedisBroker, for one Redis server;
# - cluster/: RedisClusterBroker, for a Redis Cluster (imported as
#   flask_sse_push.brokers.redis_cluster);
# - shared by both: the subscriber connection and its waiters (_subscriber), the
#   listeners' channel table (_channels), the client queue (_queue), checks and the
#   per-process listener slot (_common), the Lua helpers and ids (_scripts).
# Importing this package imports redis-py: flask_sse_push.brokers imports it only
# when a redis:// URL asks for it, so the redis extra stays optional.

from __future__ import annotations

from .standalone import broker as _broker
from .standalone.broker import ACL_COMMANDS as ACL_COMMANDS
from .standalone.broker import SUBSCRIBER_NAME as SUBSCRIBER_NAME
from .standalone.broker import RedisBroker

__all__ = ["RedisBroker"]

# Where users import the broker from, its documentation is the broker module's.
__doc__ = _broker.__doc__
