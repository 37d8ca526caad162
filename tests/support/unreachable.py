"""A broker whose backend cannot be reached, as a Redis broker during an outage.

It is a real :class:`~flask_sse_push.Broker` implementation, not a mock: the views
and the health endpoint are tested against what any broker does when it is down.
"""

from __future__ import annotations

import typing as t

from flask_sse_push import Broker, BrokerError, ServerSentEvent, Subscription

if t.TYPE_CHECKING:
    from collections.abc import Sequence

REASON = "no route to broker"


class UnreachableBroker(Broker):
    def publish(self, channel: str, event: ServerSentEvent) -> str:
        raise BrokerError(REASON)

    def subscribe(
        self, channels: Sequence[str], *, last_event_id: str | None = None
    ) -> Subscription:
        raise BrokerError(REASON)

    def cursor(self, channels: Sequence[str]) -> str:
        raise BrokerError(REASON)

    def subscriber_count(self) -> int:
        return 0

    def ping(self) -> None:
        raise BrokerError(REASON)
