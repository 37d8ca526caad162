"""The cluster broker's resume: judge a client's cursor, replay in pages, go live.

Each channel is read on its own shard, in pages (see :mod:`._replay`), from
its own position; what the pages hold is merged by id (a time) and sent until
the replay budget is spent. Cursors and verdicts are in :mod:`._cluster_cursor`.
"""

from __future__ import annotations

import typing as t

from ._cluster_cursor import decode_positions, foreign_verdict, plain_start, verdict, wire_id
from ._redis_scripts import ZERO
from ._replay import BUDGET_REASON, Spending, complete_part, mean_size, page_count
from .base import reset_event

if t.TYPE_CHECKING:
    from ..event import ServerSentEvent
    from ._cluster_cursor import ChannelRead
    from ._cluster_subscription import ClusterSubscription, Item
    from ._redis_scripts import Key
    from .redis_cluster import RedisClusterBroker


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
    exact = [True] * len(names)
    user_id = None
    if positions is None:
        if plain is not None:
            positions = [plain] * len(names)
            exact = [len(names) == 1] * len(names)
        else:
            user_id = last_event_id
    starts: list[Key | None] = list(positions) if positions else [None] * len(names)
    # One more than a page: the entry at the start itself comes first.
    reads = [
        broker.read_channel(name, start, user_id, count + 1)
        for name, start in zip(names, starts, strict=True)
    ]
    if user_id is not None:
        found = [read.found for read in reads if read.found is not None]
        if found:
            # The entry of the user id is the position on its channel, a time elsewhere.
            newest = max(found)
            starts = [newest] * len(names)
            exact = [read.found is not None for read in reads]
            if len(names) > 1:
                reads = [
                    read
                    if read.found is not None
                    else broker.read_channel(name, newest, None, count + 1)
                    for name, read in zip(names, reads, strict=True)
                ]
    verdicts = []
    for start, read, is_exact in zip(starts, reads, exact, strict=True):
        if start is None:
            verdicts.append("unknown")
        elif plain is not None and len(names) == 1:
            verdicts.append(foreign_verdict(start, read))
        else:
            verdicts.append(verdict(start, read, strict=is_exact))
    if plain is not None and len(names) > 1 and positions is not None:
        # A plain id over several channels must be one of theirs.
        if not any(
            start is not None and verdict(start, read, strict=True) == "ok"
            for start, read in zip(starts, reads, strict=True)
        ):
            verdicts = ["unknown"] * len(names)
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
            position = positions[i] = max(positions[i], bound)
            reads[i] = broker.read_channel(names[i], (position[0], position[1] + 1), None, count)
            through[i] = max(through[i], reads[i].tail or ZERO)
        indexes = [i for i in indexes if reads[i].entries]
    return backlog, False
