"""The five scenarios, at full size and at smoke size."""

from __future__ import annotations

import dataclasses
import os
import typing as t


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One table: what the load generator does, and to whom."""

    name: str
    title: str
    mode: str
    contenders: tuple[str, ...]
    full: dict[str, t.Any]
    smoke: dict[str, t.Any]
    workers: int = 1
    #: Keepalive interval the servers run with (seconds).
    keepalive: float = 15.0
    smoke_keepalive: float = 0.3
    #: Count the broker's Redis connections while the load runs.
    count_redis: bool = False
    #: Who ``--smoke`` runs: only what the test extras install.
    smoke_contenders: tuple[str, ...] = ("flask_sse_push", "limit")

    def size(self, smoke: bool) -> dict[str, t.Any]:
        return dict(self.smoke if smoke else self.full)


#: The checkout to compare with, when ``BENCH_BASELINE`` names one (see contenders.py).
BASELINE = ("flask_sse_push_baseline",) if os.environ.get("BENCH_BASELINE") else ()

ALL = ("flask_sse_push", *BASELINE, "flask_sse_push_redis", "flask_sse", "sse_starlette", "limit")

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "broadcast",
            "Broadcast: {clients:,} clients, publisher flat out for {duration:g} s"
            " (bursts of {burst} events between yields)",
            "broadcast",
            (*ALL, "redis_3ch", "redis_cluster"),
            full={"clients": 1000, "duration": 5.0, "pad": 48, "burst": 10},
            smoke={"clients": 20, "duration": 0.5, "pad": 48, "burst": 10},
        ),
        Scenario(
            "broadcast_each",
            "Broadcast, one event per yield: {clients:,} clients, publisher yields after"
            " every event for {duration:g} s",
            "broadcast",
            ALL,
            full={"clients": 1000, "duration": 5.0, "pad": 48, "burst": 1},
            smoke={"clients": 20, "duration": 0.3, "pad": 48, "burst": 1},
            smoke_contenders=("flask_sse_push",),
        ),
        Scenario(
            "latency",
            "Latency: {clients:,} clients, {rate:g} events/s for {duration:g} s"
            " (timed on every {sample_every}th client, all counted)",
            "latency",
            ALL,
            full={"clients": 1000, "duration": 10.0, "rate": 100.0, "pad": 48, "sample_every": 10},
            smoke={"clients": 20, "duration": 0.5, "rate": 100.0, "pad": 48, "sample_every": 5},
        ),
        Scenario(
            "idle",
            "Idle scale: open streams in one worker, keepalive every {keepalive:g} s",
            "idle",
            ("flask_sse_push", *BASELINE, "parked_floor", "wsgi_floor", "limit"),
            full={"steps": [10000, 25000, 50000], "settle": 2.0},
            smoke={"steps": [50], "settle": 0.2},
            keepalive=5.0,
            smoke_contenders=("flask_sse_push", "parked_floor", "limit"),
        ),
        Scenario(
            "redis_fanout",
            "Redis fan-out: {clients:,} clients, {workers} workers, publisher flat out"
            " for {duration:g} s (bursts of {burst})",
            "broadcast",
            ("flask_sse_push_redis", "redis_3ch", "redis_cluster", "flask_sse"),
            full={"clients": 1000, "duration": 5.0, "pad": 48, "burst": 10},
            smoke={"clients": 20, "duration": 0.5, "pad": 48, "burst": 10},
            workers=2,
            count_redis=True,
            smoke_contenders=("flask_sse_push_redis",),
        ),
        Scenario(
            "storm",
            "Connect storm: {clients:,} clients connecting at once",
            "storm",
            ALL,
            full={"clients": 5000, "timeout": 60.0},
            smoke={"clients": 50, "timeout": 20.0},
        ),
    )
}
