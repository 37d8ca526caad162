"""The replay budget, and reading a replay in pages.

A resuming client asks for everything after its cursor, which across many
channels with long histories can be far more than it could use: one request
could make Redis and the worker read, hold and send the whole history at once.
So a replay is bounded by a :class:`ReplayBudget` (events and bytes) and read in
pages of at most :data:`PAGE_ENTRIES` entries; past the budget the client gets
what fits, then a ``reset`` with reason ``"budget"``: never a silent cut.

A page reads up to ``count`` entries per channel, each channel from its own
position. Merged by id, the entries up to the smallest last id among the
channels that filled their page are complete (a channel that did not fill it
had nothing more); those are the page's events, and the next page starts after
them. Each page yields at least ``count`` events, so the pages end.
"""

from __future__ import annotations

import heapq
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from ..event import ServerSentEvent
    from .redis._scripts import Key

_T = t.TypeVar("_T")

#: Entries one page may read across all channels: a few hundred keep a Redis
#: script far below a millisecond per kilobyte event, and the worker's decoding
#: of one page short.
PAGE_ENTRIES = 256

#: Bytes of event data one page should read, once the first page showed how
#: large the events are; and the entries per channel of that first page.
PAGE_BYTES = 256 * 1024
FIRST_PAGE = 16

#: The reason of the ``reset`` that ends a replay cut short by its budget.
BUDGET_REASON = "budget"


class ReplayBudget(t.NamedTuple):
    """How much one replay may send: at most ``events`` events and ``bytes`` bytes.

    Set with ``SSE_PUSH_REPLAY_MAX_EVENTS`` and ``SSE_PUSH_REPLAY_MAX_BYTES``.
    ``bytes`` counts the events' wire form (:meth:`ServerSentEvent.encode`).
    """

    events: int = 1000
    bytes: int = 1024 * 1024

    def check(self) -> ReplayBudget:
        """:raises ValueError: a bound is below 1."""
        if self.events < 1 or self.bytes < 1:
            raise ValueError(
                "The replay budget needs SSE_PUSH_REPLAY_MAX_EVENTS >= 1 and"
                f" SSE_PUSH_REPLAY_MAX_BYTES >= 1 (got events={self.events},"
                f" bytes={self.bytes})."
            )
        return self


class Spending:
    """What is left of a :class:`ReplayBudget` while one replay is collected."""

    __slots__ = ("events", "bytes")

    def __init__(self, budget: ReplayBudget) -> None:
        self.events = budget.events
        self.bytes = budget.bytes

    def take(self, event: ServerSentEvent) -> bool:
        """Count ``event`` in; return False, counting nothing, if it does not fit."""
        size = len(event.encode())
        if self.events < 1 or size > self.bytes:
            self.events = 0
            return False
        self.events -= 1
        self.bytes -= size
        return True


def page_count(channels: int, budget: ReplayBudget, entry_bytes: int | None = None) -> int:
    """Entries to read per channel in one page, for a stream of ``channels`` channels.

    :param entry_bytes: the mean data size of the entries of the page before;
        ``None`` for the first page, which is kept small as the size is unknown.

    One more than the budget is never needed: the budget would be exceeded.
    """
    channels = max(1, channels)
    count = PAGE_ENTRIES // channels
    if entry_bytes is None:
        count = min(count, FIRST_PAGE)
    else:
        count = min(count, PAGE_BYTES // (max(1, entry_bytes) * channels))
    return max(1, min(budget.events + 1, count))


def mean_size(events: Sequence[ServerSentEvent]) -> int | None:
    """The mean data size of ``events``, to size the next page; ``None`` for none."""
    if not events:
        return None
    return sum(len(event.data) for event in events) // len(events)


def complete_part(
    pages: Sequence[Sequence[tuple[Key, _T]]], count: int
) -> tuple[list[tuple[Key, int, _T]], Key | None]:
    """Merge one page of per-channel entries by key; return what is complete.

    :param pages: per channel, its entries ``(key, item)`` after its position,
        ascending, at most ``count`` of them.
    :returns: the complete entries ``(key, channel index, item)``, ascending,
        and the key they run through, or ``None`` when every channel was read
        to its end (the page holds the rest of the replay). The key holds for
        channels read at once (one snapshot); a channel read apart from the
        others is complete only up to the lower of the key and its page's end.
    """
    full = [page[-1][0] for page in pages if len(page) >= count]
    bound = min(full) if full else None
    merged = heapq.merge(
        *([(key, index, item) for key, item in page] for index, page in enumerate(pages)),
        key=lambda entry: entry[0],
    )
    if bound is None:
        return list(merged), None
    return [entry for entry in merged if entry[0] <= bound], bound
