"""Server-Sent Events for Flask: push to browsers, resume without loss, scale on Redis."""

from __future__ import annotations

from .brokers import Broker, MemoryBroker, Subscription
from .event import ServerSentEvent
from .exceptions import (
    BrokerError,
    ChannelError,
    LastEventIDError,
    SSEPushError,
    SubscriptionClosed,
)
from .extension import SSEPush

__all__ = [
    "Broker",
    "BrokerError",
    "ChannelError",
    "LastEventIDError",
    "MemoryBroker",
    "SSEPush",
    "SSEPushError",
    "ServerSentEvent",
    "Subscription",
    "SubscriptionClosed",
]

__version__ = "0.1.0"
