"""Server-Sent Events for Flask: push to browsers, resume without loss, scale on Redis."""

from __future__ import annotations

import typing as t

from .brokers import Broker, MemoryBroker, Subscription
from .connections import StreamInfo
from .event import ServerSentEvent
from .exceptions import (
    BrokerError,
    ChannelError,
    LastEventIDError,
    SSEPushError,
    SubscriptionClosed,
)
from .extension import SSEPush
from .publisher import Publisher
from .views import request_last_event_id as last_event_id

if t.TYPE_CHECKING:
    from .brokers.redis import RedisBroker

__all__ = [
    "Broker",
    "BrokerError",
    "ChannelError",
    "LastEventIDError",
    "MemoryBroker",
    "Publisher",
    "RedisBroker",
    "SSEPush",
    "SSEPushError",
    "ServerSentEvent",
    "StreamInfo",
    "Subscription",
    "SubscriptionClosed",
    "last_event_id",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> t.Any:
    # RedisBroker imports redis, an optional dependency: only load it on use.
    if name == "RedisBroker":
        try:
            from .brokers.redis import RedisBroker
        except ImportError as exc:
            raise ImportError(
                "flask_sse_push.RedisBroker needs the redis package. Install it with:"
                " pip install 'flask-sse-push[redis]'"
            ) from exc
        return RedisBroker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
