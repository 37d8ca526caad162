"""One publish in GRIP mode: to the broker, then once to the proxies."""

from __future__ import annotations

import typing as t

from .instruct import grip_channel
from .proxy import publish_item

if t.TYPE_CHECKING:
    from ..brokers.redis import RedisBroker
    from ..event import ServerSentEvent
    from .proxy import ProxyPublisher


def publish_through(
    broker: RedisBroker, publisher: ProxyPublisher, channel: str, event: ServerSentEvent
) -> str:
    """Publish ``event`` to ``broker`` and to the proxies; return its SSE id.

    The publishing process is the one that sends each event to the proxies, so
    it is sent once however many workers and hosts share the broker. Its id and
    prev-id come from the broker's one atomic publish, so the proxies order the
    channel's events as the broker does.

    :raises BrokerError: the broker could not take the event (nothing was sent).
    """
    sse_id, entry_id, prev_id = broker.publish_entry(channel, event)
    wire = event if event.id == sse_id else event.replace(id=sse_id)
    publisher.send([publish_item(grip_channel(broker.prefix, channel), wire, entry_id, prev_id)])
    return sse_id
