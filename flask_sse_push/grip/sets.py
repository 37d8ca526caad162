"""Multi-channel streams through the proxy: one proxy channel per channel set.

A proxy orders each of its channels on its own. If a stream of channels ``a``
and ``b`` subscribed to both, an event of ``b`` could reach the client before
an earlier one of ``a`` (two publishers racing, or ``a``'s item lost and fetched
later), and the client's ``Last-Event-ID`` would then skip or repeat events on
resume. So such a stream subscribes to one proxy channel for its whole set,
``<prefix><a>+<b>`` (``+`` is never in a channel name), whose items are chained
by the broker's one id order across the set: an item's ``prev-id`` is the
newest entry of any of the set's channels below it.

That prev-id needs no atomic read: the broker issues ids from one clock inside
its publish script, so once an entry exists, every entry with a smaller id
exists too, and a later read of "the newest entry below it" is exact.

Publishers learn the sets in use from a sorted set per channel in Redis,
``<prefix>grip:sets:<channel>``, set name -> when a held stream last named it;
entries not renewed for :data:`SET_TTL` seconds are dropped. Held streams
renew theirs each time the proxy fetches their next link, which it does at
least every :data:`LINK_REFRESH` seconds.
"""

from __future__ import annotations

import time
import typing as t

from ..brokers.redis._scripts import ZERO, as_text, format_id, parse_id

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from ..brokers.redis import RedisBroker

#: Seconds a channel set stays known to publishers without being renewed.
SET_TTL = 86400

#: Seconds after which the proxy fetches an idle multi-channel stream's next
#: link (``Grip-Link ... timeout=``), which renews its set.
LINK_REFRESH = 3600

SEPARATOR = "+"


def set_name(channels: Sequence[str]) -> str:
    """The name of a channel set, the same whatever order the client gave."""
    return SEPARATOR.join(sorted(channels))


def proxy_channel(prefix: str, channels: Sequence[str]) -> str:
    """The proxy channel a stream of ``channels`` subscribes to."""
    return prefix + set_name(channels)


def _index(broker: RedisBroker, channel: str) -> str:
    return f"{broker.prefix}grip:sets:{channel}"


def register(broker: RedisBroker, channels: Sequence[str]) -> None:
    """Tell publishers that a held stream listens to this set (for :data:`SET_TTL` s).

    Call it before reading the stream's position: an event published after
    the read then goes to the set's proxy channel. (One published between
    the registration and a publisher noticing it is filled from the next link.)

    :raises BrokerError: Redis could not be reached.
    """
    name = set_name(channels)
    now = time.time()
    try:
        pipe = broker.client_here().pipeline(transaction=False)
        for channel in channels:
            pipe.zadd(_index(broker, channel), {name: now})
        pipe.execute()
    except Exception as exc:
        raise broker._error("register a GRIP channel set", exc) from exc


def set_items(broker: RedisBroker, channel: str, entry_id: str) -> list[tuple[str, str]]:
    """The sets ``channel`` is in, each with the prev-id of ``entry_id`` in it.

    :returns: ``(set name, prev-id)`` pairs; the prev-id is the newest entry
        below ``entry_id`` in any of the set's channels, ``0-0`` if none.
    :raises BrokerError: Redis could not be reached.
    """
    index = _index(broker, channel)
    now = time.time()
    try:
        pipe = broker.client_here().pipeline(transaction=False)
        pipe.zremrangebyscore(index, "-inf", now - SET_TTL)
        pipe.zrange(index, 0, -1)
        names = [as_text(name) for name in pipe.execute()[1]]
        if not names:
            return []
        members = {name: name.split(SEPARATOR) for name in names}
        others = sorted({c for channels in members.values() for c in channels})
        pipe = broker.client_here().pipeline(transaction=False)
        for other in others:
            pipe.xrevrange(f"{broker.prefix}stream:{other}", f"({entry_id}", "-", count=1)
        below = {
            other: (parse_id(as_text(reply[0][0])) if reply else None) or ZERO
            for other, reply in zip(others, pipe.execute(), strict=True)
        }
    except Exception as exc:
        raise broker._error("read the GRIP channel sets", exc) from exc
    return [
        (name, format_id(max(below[c] for c in channels))) for name, channels in members.items()
    ]
