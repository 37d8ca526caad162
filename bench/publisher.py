"""The publisher loop every bench server runs, in a gevent and an asyncio flavour.

Each event's data starts with a marker the load generator counts (see
``loadgen.py``), the event's number and the wall-clock time it was published,
so the receiver can compute publish-to-receive latency from the same clock.
"""

from __future__ import annotations

import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WARM = "~W~"


def measured(seq: int, filler: str) -> str:
    return f"~R~{seq}~{time.time_ns()}~{filler}"


def end(count: int) -> str:
    return f"~E~{count}~"


class Plan(t.NamedTuple):
    """What one publisher run does: for how long, how fast (0 = flat out), how big.

    Flat out, ``burst`` events are published back to back between yields.
    """

    duration: float
    rate: float
    pad: int
    burst: int = 1

    @classmethod
    def from_query(cls, args: t.Mapping[str, str]) -> Plan:
        return cls(
            duration=min(float(args.get("duration", "5")), 600.0),
            rate=float(args.get("rate", "0")),
            pad=min(int(args.get("pad", "48")), 65536),
            burst=max(1, min(int(args.get("burst", "1")), 1000)),
        )


def run_gevent(publish: Callable[[str], object], plan: Plan) -> int:
    """Publish for ``plan.duration`` seconds, then the end marker; return the count.

    Flat out, the loop yields once after each publish, so the subscribers get to
    run: a cooperative publisher as fast as the fan-out lets it be.
    """
    import gevent

    filler = "x" * plan.pad
    interval = 1.0 / plan.rate if plan.rate > 0 else 0.0
    start = time.monotonic()
    deadline = start + plan.duration
    seq = 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if interval:
            due = start + seq * interval
            if due > now:
                gevent.sleep(min(due, deadline) - now)
                continue
        seq += 1
        publish(measured(seq, filler))
        if not interval and seq % plan.burst == 0:
            gevent.sleep(0)
    publish(end(seq))
    return seq


async def run_asyncio(publish: Callable[[str], Awaitable[object]], plan: Plan) -> int:
    """The same loop as :func:`run_gevent`, for an asyncio server."""
    import asyncio

    filler = "x" * plan.pad
    interval = 1.0 / plan.rate if plan.rate > 0 else 0.0
    start = time.monotonic()
    deadline = start + plan.duration
    seq = 0
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if interval:
            due = start + seq * interval
            if due > now:
                await asyncio.sleep(min(due, deadline) - now)
                continue
        seq += 1
        await publish(measured(seq, filler))
        if not interval and seq % plan.burst == 0:
            await asyncio.sleep(0)
    await publish(end(seq))
    return seq
