"""Message brokers: the :class:`Broker` interface and its implementations.

:class:`~flask_sse_push.brokers.redis.RedisBroker` lives in its own module and is
imported only when asked for, so the ``redis`` package stays optional.
"""

from __future__ import annotations

import typing as t

from ._replay import ReplayBudget
from .base import Broker, Subscription
from .handoff import Consumer
from .memory import MemoryBroker

if t.TYPE_CHECKING:
    from .redis import RedisBroker
    from .redis_cluster import RedisClusterBroker

__all__ = [
    "Broker",
    "Consumer",
    "MemoryBroker",
    "ReplayBudget",
    "Subscription",
    "broker_from_url",
]


def broker_from_url(
    url: str | None,
    *,
    history: int = 1000,
    queue_size: int = 1000,
    redis_prefix: str = "sse:",
    replay_budget: ReplayBudget | None = None,
) -> Broker:
    """Return the broker that ``SSE_PUSH_BROKER_URL`` names.

    ``None`` (or ``"memory://"``) gives a :class:`MemoryBroker`; ``redis://``,
    ``rediss://`` and ``unix://`` give a ``RedisBroker``; ``redis+cluster://``
    and ``rediss+cluster://`` (seed nodes ``host:port``, comma-separated) give a
    ``RedisClusterBroker``.

    :param history: events kept per channel for replay.
    :param queue_size: events a client may fall behind by before it is dropped.
    :param redis_prefix: namespace for every Redis key and channel.
    :param replay_budget: how much one resume may replay (see :class:`ReplayBudget`).
    """
    if url is None or url == "memory://":
        return MemoryBroker(history=history, queue_size=queue_size, replay_budget=replay_budget)
    broker_class = _redis_broker_class(url)
    return broker_class.from_url(
        url,
        history=history,
        queue_size=queue_size,
        prefix=redis_prefix,
        replay_budget=replay_budget,
    )


def _redis_broker_class(url: str) -> type[RedisBroker] | type[RedisClusterBroker]:
    """The Redis broker class for ``url``'s scheme, imported only now (redis is optional)."""
    scheme = url.partition("://")[0]
    try:
        if scheme in {"redis", "rediss", "unix"}:
            from .redis import RedisBroker

            return RedisBroker
        if scheme in {"redis+cluster", "rediss+cluster"}:
            from .redis_cluster import RedisClusterBroker

            return RedisClusterBroker
    except ImportError as exc:
        raise RuntimeError(
            f"SSE_PUSH_BROKER_URL is {url!r}, but the redis package is not"
            " installed. Install it with: pip install 'flask-sse-push[redis]'"
        ) from exc
    raise ValueError(
        f"SSE_PUSH_BROKER_URL {url!r} has an unknown scheme; use redis://host:port/db,"
        " redis+cluster://host:port for a Redis Cluster, or leave it unset for the"
        " in-process broker."
    )
