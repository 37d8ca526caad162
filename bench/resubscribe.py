"""How long does one worker stall while it resubscribes after a Redis restart?

Usage (from the repository root; needs redis-server and the test extras)::

    python bench/resubscribe.py [repeats] [single|cluster-restart|cluster-failover]

For 5,000 to 30,000 channels (streams of 250 channels each) it starts a
redis-server and ``gunicorn -k gevent -w 1`` serving ``tests/apps/load_app.py``,
restarts redis-server under the worker and measures (see
``tests/support/resubscribe_scenario.py``): the time until every client had its
``reset``, the worker's longest stall as a 10 ms ticker greenlet saw it (wall
time, and the CPU time of the event loop's thread, which a busy machine does not
inflate), the longest garbage collection, the slowest ``/events/health`` answer,
and how long SIGTERM took. Each row is the worst of ``repeats`` runs (default 1).
Prints a Markdown table.

The second argument picks the Redis (default ``single``): ``cluster-restart``
runs the Redis Cluster broker on 3 masters and kills and restarts every master
without persistence (every channel resubscribed, every client reset);
``cluster-failover`` gives each master a replica and ``kill -9``-s one master
(the channels of that shard resubscribed on the promoted replica and caught up).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.resubscribe_scenario import Figures, run  # noqa: E402

#: (streams, channels per stream) rows to measure.
ROWS = [(20, 250), (40, 250), (80, 250), (120, 250)]

COLUMNS = {
    "channels": "channels",
    "recovery": "recovery s",
    "longest_stall": "longest stall s (wall)",
    "longest_stall_cpu": "longest stall s (CPU)",
    "longest_gc": "longest GC s",
    "slowest_health": "slowest /health s",
    "sigterm": "SIGTERM s",
}


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    mode = sys.argv[2] if len(sys.argv) > 2 else "single"
    if mode not in ("single", "cluster-restart", "cluster-failover"):
        raise SystemExit(f"unknown mode {mode!r}: single, cluster-restart or cluster-failover")
    cluster = mode != "single"
    change = "failover" if mode == "cluster-failover" else "restart"
    rows: list[Figures] = []
    for streams, width in ROWS:
        runs = [
            run(streams, width, cluster=cluster, change=change, timeout=180) for _ in range(repeats)
        ]
        worst = Figures(channels=streams * width)
        for name in COLUMNS:
            if name != "channels":
                setattr(worst, name, max(getattr(r, name) for r in runs))
        rows.append(worst)
        print(f"{worst.channels} channels: {runs}", file=sys.stderr)
    print("| " + " | ".join(COLUMNS.values()) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        cells = [str(row.channels)] + [
            f"{getattr(row, name):.3f}" for name in COLUMNS if name != "channels"
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
