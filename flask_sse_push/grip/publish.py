"""One publish in GRIP mode: to the broker, then once to the proxies."""

from __future__ import annotations

import logging
import typing as t

from ..exceptions import BrokerError
from .proxy import publish_item
from .sets import proxy_channel, set_items

if t.TYPE_CHECKING:
    from ..brokers.redis import RedisBroker
    from ..event import ServerSentEvent
    from .proxy import ProxyPublisher

logger = logging.getLogger("flask_sse_push")


def publish_through(
    broker: RedisBroker, publisher: ProxyPublisher, channel: str, event: ServerSentEvent
) -> str:
    """Publish ``event`` to ``broker`` and to the proxies; return its SSE id.

    The publishing process is the one that sends each event to the proxies, so
    it is sent once however many workers and hosts share the broker. Its id and
    prev-id come from the broker's one atomic publish, so the proxies order the
    channel's events as the broker does. It also goes to the proxy channel of
    every channel set held streams listen to (see :mod:`.sets`).

    :raises BrokerError: the broker could not take the event (nothing was sent).
    """
    sse_id, entry_id, prev_id = broker.publish_entry(channel, event)
    wire = event if event.id == sse_id else event.replace(id=sse_id)
    prefix = broker.prefix
    items = [publish_item(proxy_channel(prefix, [channel]), wire, entry_id, prev_id)]
    try:
        sets = set_items(broker, channel, entry_id)
    except BrokerError as exc:
        # The sets' streams fill this event from the next link on their next one.
        logger.warning("%s", exc)
        sets = []
    items += [publish_item(prefix + name, wire, entry_id, prev) for name, prev in sets]
    publisher.send(items)
    return sse_id
