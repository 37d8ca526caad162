"""Where each channel of a held stream stands: the replay and the GRIP prev-ids.

The proxy sends a channel's next item only if the item's ``prev-id`` is the
last id of that channel the connection got; otherwise it fetches the next link
to fill the gap. So the ids the answer names must come from the same atomic
read as the events it carries: an id too old would repeat events, one too new
would lose them. The Redis broker's read script gives both: every entry after a
first id per channel, with the clock. Reading each channel's newest id first,
and the entries after it (or after the client's cursor, if older) in the
script, makes the last entry read, or that newest id, the channel's position at
the read. An event published between the two reads is in the read, and its item
then does not match the answer's prev-id: the proxy drops it and fetches the
next link, which has nothing new. Nothing is lost and nothing repeats.

The prev-id of a channel that never had an event is ``0-0``, as in the publish
script.
"""

from __future__ import annotations

import typing as t

from ..brokers.base import reset_event
from ..brokers.redis._scripts import ZERO, as_text, format_id, parse_id

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..brokers.redis import RedisBroker
    from ..brokers.redis._scripts import Key, Snapshot
    from ..event import ServerSentEvent


class Position(t.NamedTuple):
    """What an answer carries: the events to send and each channel's last entry id."""

    events: list[ServerSentEvent]
    #: broker channel -> entry id of its last event the answer accounts for.
    prev_ids: dict[str, str]


def newest_ids(broker: RedisBroker, channels: Sequence[str]) -> dict[str, Key]:
    """Each channel's newest entry id, ``0-0`` for an empty one.

    :raises BrokerError: Redis could not be reached.
    """
    try:
        pipe = broker.client_here().pipeline(transaction=False)
        for name in channels:
            pipe.xrevrange(f"{broker.prefix}stream:{name}", "+", "-", count=1)
        replies = pipe.execute()
    except Exception as exc:
        raise broker._error("read the newest ids", exc) from exc
    newest = {}
    for name, reply in zip(channels, replies, strict=True):
        newest[name] = (parse_id(as_text(reply[0][0])) if reply else None) or ZERO
    return newest


def _prev_ids(snapshot: Snapshot, firsts: Mapping[str, Key]) -> dict[str, str]:
    prev_ids = {}
    for name, first in firsts.items():
        entries = snapshot.entries.get(name)
        prev_ids[name] = format_id(entries[-1].key if entries else first)
    return prev_ids


def initial_position(
    broker: RedisBroker, channels: Sequence[str], last_event_id: str | None
) -> Position:
    """The replay after ``last_event_id`` (or the ``reset``), as the broker's
    own subscribe decides it, and the prev-ids that go with it.

    :raises BrokerError: Redis could not be reached.
    """
    newest = newest_ids(broker, channels)
    cursor = None
    if last_event_id is not None:
        cursor = parse_id(last_event_id)
        if cursor is None:  # perhaps a user-supplied id: the broker's id hashes know it
            cursor = broker.read(list(channels), user_id=last_event_id).found
    firsts = {
        name: min(cursor, newest[name]) if cursor is not None else newest[name] for name in channels
    }
    snapshot = broker.read(list(channels), firsts=firsts)
    prev_ids = _prev_ids(snapshot, newest)
    if last_event_id is None:
        return Position([], prev_ids)
    if cursor is None or not snapshot.known(cursor):
        reason = "unknown"
    elif snapshot.gap_after(cursor, channels):
        reason = "expired"
    else:
        return Position([entry.event for entry in snapshot.after(cursor, channels)], prev_ids)
    return Position([reset_event(last_event_id, format_id(snapshot.head), reason)], prev_ids)


def position_after(broker: RedisBroker, lasts: Mapping[str, str]) -> Position:
    """What a connection missed after the last id it got of each channel
    (a next-link request's ``Grip-Last``), merged in id order.

    A channel whose last id the broker cannot continue from (never issued, or
    the events after it left the history) makes it a ``reset`` instead.

    :raises BrokerError: Redis could not be reached.
    """
    channels = list(lasts)
    firsts = {name: parse_id(value) for name, value in lasts.items()}
    usable = {name: key for name, key in firsts.items() if key is not None}
    snapshot = broker.read(channels, firsts=usable)
    if len(usable) < len(firsts):
        newest = newest_ids(broker, [name for name in channels if name not in usable])
        usable.update(newest)
        snapshot = broker.read(channels, firsts=usable)
    prev_ids = _prev_ids(snapshot, usable)
    gap = len(usable) > sum(1 for key in firsts.values() if key is not None)
    for name, first in usable.items():
        entries = snapshot.entries.get(name) or []
        if not snapshot.known(first) or (entries and entries[0].prev > first):
            gap = True
    if gap:
        cursor = max(usable.values())
        event = reset_event(format_id(cursor), format_id(snapshot.head), "expired")
        return Position([event], prev_ids)
    merged = [entry for name in channels for entry in snapshot.entries.get(name) or []]
    merged.sort(key=lambda entry: entry.key)
    return Position([entry.event for entry in merged], prev_ids)
