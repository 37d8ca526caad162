"""The Redis brokers, and what the two share.

- ``standalone/``: :class:`RedisBroker`, for one Redis server;
- ``cluster/``: ``RedisClusterBroker``, for a Redis Cluster (imported from
  ``flask_sse_push.brokers.redis_cluster``);
- shared by both: the subscriber connection and its waiters (``_subscriber``), the
  listeners' channel table (``_channels``), the client queue (``_queue``), checks
  and the per-process listener slot (``_common``), the Lua scripts and entry ids
  (``_scripts``).

Only the brokers import redis-py, and only when first named here: the ids and
scripts of ``_scripts`` can be used (by the GRIP mode, say) without the ``redis``
extra installed.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from .standalone.broker import ACL_COMMANDS as ACL_COMMANDS
    from .standalone.broker import SUBSCRIBER_NAME as SUBSCRIBER_NAME
    from .standalone.broker import RedisBroker as RedisBroker

__all__ = ["RedisBroker"]

_LAZY = ("ACL_COMMANDS", "RedisBroker", "SUBSCRIBER_NAME")


def __getattr__(name: str) -> t.Any:
    # Imported on first use: importing redis-py is what the redis extra is for.
    if name in _LAZY:
        from .standalone import broker

        return getattr(broker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
