"""The Redis brokers, and what the two share.

- ``standalone/``: :class:`RedisBroker`, for one Redis server.
- ``cluster/``: :class:`~flask_sse_push.brokers.redis_cluster.RedisClusterBroker`,
  for a Redis Cluster.
- Shared by both: the subscriber connection and its waiters (``_subscriber``),
  the listeners' channel table (``_channels``), the client queue (``_queue``),
  checks and the per-process listener slot (``_common``), the Lua helpers and
  ids (``_scripts``).

Importing this package imports redis-py: ``flask_sse_push.brokers`` imports it
only when a ``redis://`` URL asks for it, so the ``redis`` extra stays optional.
"""

from __future__ import annotations

from .standalone.broker import SUBSCRIBER_NAME as SUBSCRIBER_NAME
from .standalone.broker import RedisBroker

__all__ = ["RedisBroker"]
