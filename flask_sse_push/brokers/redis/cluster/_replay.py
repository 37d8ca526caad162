"""The cluster broker's resume: judge a client's cursor, replay in pages, go live.

Each channel is read on its own shard, in pages (see :mod:`._replay`), from
its own position; what the pages hold is merged by id (a time) and sent until
the replay budget is spent. Cursors and verdicts are in :mod:`._cluster_cursor`.
"""

from __future__ import annotations

import typing as t

from ..._replay import BUDGET_REASON, Spending, complete_part, mean_size, page_count
from ...base import reset_event
from .._scripts import ZERO
from ._cursor import decode_positions, foreign_verdict, plain_start, verdict, wire_id

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from ....event import ServerSentEvent
    from .._scripts import Key
    from ._cursor import ChannelRead
    from ._subscription import ClusterSubscription, Item
    from .broker import RedisClusterBroker


#: What a cursor resumes to: each channel's start (``None``: not known), its
#: first read, and its verdict (``"ok"``, ``"expired"`` or ``"unknown"``).
Resumed = tuple[list["Key | None"], list["ChannelRead"], list[str]]


def hand_over(
    broker: RedisClusterBroker, sub: ClusterSubscription, last_event_id: str | None
) -> bool:
    """Replay after ``last_event_id`` into ``sub``, then switch it to live events.

    :returns: False if the client overflowed meanwhile.
    :raises BrokerError: a shard could not be read.
    """
    names = sub.channels
    if last_event_id is None:
        tails = broker.tails(names)
        sub.start_id = wire_id(tails)
        return sub.go_live([], [], tails, tails)
    count = page_count(len(names), broker.replay_budget)
    positions = decode_positions(last_event_id, len(names))
    plain = plain_start(last_event_id)
    if positions is not None:
        resumed = _resume_composite(broker, names, positions, plain is not None, count)
    elif plain is not None:
        resumed = _resume_plain(broker, names, plain, count)
    else:
        resumed = _resume_application_id(broker, names, last_event_id, count)
    return _go_live(broker, sub, last_event_id, resumed, count)


def _read_all(
    broker: RedisClusterBroker,
    names: Sequence[str],
    starts: Sequence[Key | None],
    user_id: str | None,
    count: int,
) -> list[ChannelRead]:
    # One more than a page: the entry at the start itself comes first.
    return [
        broker.read_channel(name, start, user_id, count + 1)
        for name, start in zip(names, starts, strict=True)
    ]


def _plain_verdicts(starts: Sequence[Key], reads: list[ChannelRead], *, strict: bool) -> list[str]:
    """Verdicts on an entry id given for every channel: on one channel it may
    be a time from elsewhere; over several it must be one of theirs."""
    if len(reads) == 1:
        return [foreign_verdict(starts[0], reads[0])]
    pairs = list(zip(starts, reads, strict=True))
    if not any(verdict(start, read, strict=True) == "ok" for start, read in pairs):
        return ["unknown"] * len(reads)
    return [verdict(start, read, strict=strict) for start, read in pairs]


def _resume_composite(
    broker: RedisClusterBroker,
    names: Sequence[str],
    positions: Sequence[Key],
    also_plain: bool,
    count: int,
) -> Resumed:
    """A composite cursor: a position this broker issued on each channel (or,
    where every position is the same entry id, that plain id)."""
    reads = _read_all(broker, names, positions, None, count)
    if also_plain:
        verdicts = _plain_verdicts(positions, reads, strict=True)
    else:
        verdicts = [verdict(p, r, strict=True) for p, r in zip(positions, reads, strict=True)]
    return list(positions), reads, verdicts


def _resume_plain(
    broker: RedisClusterBroker, names: Sequence[str], plain: Key, count: int
) -> Resumed:
    """A plain entry id: a channel's own, or (ids are times) one from elsewhere."""
    starts = [plain] * len(names)
    reads = _read_all(broker, names, starts, None, count)
    return list(starts), reads, _plain_verdicts(starts, reads, strict=False)


def _resume_application_id(
    broker: RedisClusterBroker, names: Sequence[str], user_id: str, count: int
) -> Resumed:
    """An id the application gave an event: found on (at most) one of the channels."""
    reads = _read_all(broker, names, [None] * len(names), user_id, count)
    found = [read.found for read in reads if read.found is not None]
    if not found:
        return [None] * len(names), reads, ["unknown"] * len(names)
    # The entry of the user id is the position on its channel, a time elsewhere.
    newest = max(found)
    exact = [read.found is not None for read in reads]
    if len(names) > 1:
        reads = [
            read if read.found is not None else broker.read_channel(name, newest, None, count + 1)
            for name, read in zip(names, reads, strict=True)
        ]
    verdicts = [verdict(newest, r, strict=e) for r, e in zip(reads, exact, strict=True)]
    return [newest] * len(names), reads, verdicts


def _go_live(
    broker: RedisClusterBroker,
    sub: ClusterSubscription,
    last_event_id: str,
    resumed: Resumed,
    count: int,
) -> bool:
    """Replay what ``resumed`` found (or a ``reset``), then switch to live events."""
    names = sub.channels
    starts, reads, verdicts = resumed
    through = [read.tail or ZERO for read in reads]
    begin = list(through)
    first = []
    bad = [v for v in verdicts if v != "ok"]
    if bad:
        reason = "unknown" if "unknown" in bad else "expired"
        first.append(reset_event(last_event_id, wire_id(through), reason))
    replaying: dict[int, Key] = {}
    for i, start in enumerate(starts):
        if verdicts[i] == "ok" and start is not None:
            replaying[i] = start
            # A plain id from elsewhere may lie beyond this channel's newest
            # entry: the client then has everything up to that entry.
            begin[i] = min(start, through[i])
    backlog, cut = _replay(broker, names, replaying, reads, through, count)
    last = [reset_event(last_event_id, wire_id(through), BUDGET_REASON)] if cut else []
    return sub.go_live(first, backlog, begin, through, last)


def _replay(
    broker: RedisClusterBroker,
    names: tuple[str, ...],
    positions: dict[int, Key],
    reads: list[ChannelRead],
    through: list[Key],
    count: int,
) -> tuple[list[Item], bool]:
    """Collect the replay of the channels at ``positions`` (by index), page by page.

    Updates ``through`` with each channel's newest id as last read.

    :returns: the events, oldest first, and whether the budget cut them short.
    """
    spending = Spending(broker.replay_budget)
    backlog: list[Item] = []
    indexes = sorted(positions)
    while indexes:
        pages: list[list[tuple[Key, ServerSentEvent]]] = [
            [(e.key, e.event) for e in reads[i].entries if e.key > positions[i]] for i in indexes
        ]
        complete, bound = complete_part(pages, count)
        for key, at, event in complete:
            if not spending.take(event):
                return backlog, True
            backlog.append((names[indexes[at]], key, event))
        if bound is None:
            return backlog, False
        size = mean_size([event for _, _, event in complete])
        count = page_count(len(names), broker.replay_budget, size)
        for i in indexes:
            # A page covers a channel through ``bound`` only as far as its read
            # went. One that did not fill its page was read to its newest entry
            # *then*: its shard's read comes before the others', so it may have
            # more since, below ``bound`` (another channel's id, read later).
            # Those are in no page, and go_live() drops them from the live
            # events as covered: the next page must start after its own read.
            read_to = reads[i].entries[-1].key if reads[i].entries else positions[i]
            position = positions[i] = max(positions[i], min(bound, read_to))
            reads[i] = broker.read_channel(names[i], (position[0], position[1] + 1), None, count)
            through[i] = max(through[i], reads[i].tail or ZERO)
        indexes = [i for i in indexes if reads[i].entries]
    return backlog, False
