"""The flask_sse_push bench app: the extension as shipped, plus a publish trigger.

Run it with ``gunicorn -k flask_sse_push.servers.gunicorn.GeventWorker
'app_push:create_app()'``. The broker comes from ``SSE_PUSH_BROKER_URL`` (unset:
the memory broker), the keepalive interval from ``SSE_PUSH_KEEPALIVE``, and
``SSE_PUSH_DIRECT_WRITES=0`` turns direct writes
off, all read from the environment.
"""

from __future__ import annotations

import itertools
import os
import typing as t

import gevent
from flask import Flask, request
from publisher import WARM, Plan, run_gevent

from flask_sse_push import SSEPush

sse = SSEPush()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_PUSH_BROKER_URL"] = os.environ.get("SSE_PUSH_BROKER_URL") or None
    # Every load client comes from 127.0.0.1: no per-client limit.
    app.config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"] = 1_000_000
    app.config["SSE_PUSH_KEEPALIVE"] = float(os.environ.get("SSE_PUSH_KEEPALIVE", "15"))
    app.config["SSE_PUSH_DIRECT_WRITES"] = os.environ.get("SSE_PUSH_DIRECT_WRITES") != "0"
    sse.init_app(app)

    # SSE_PUSH_BENCH_CHANNELS=a,b,c: the publisher goes round these channels (the
    # clients subscribe to all of them), so a Redis Cluster spreads the publishes.
    channels = [c for c in os.environ.get("SSE_PUSH_BENCH_CHANNELS", "").split(",") if c]
    turn = itertools.count()

    def publish(data: str) -> object:
        if not channels:
            return sse.publish(data)
        if data.startswith("~E~"):
            # Let the other shards' last events arrive before the end marker.
            gevent.sleep(0.2)
            return sse.publish(data, channel=channels[0])
        return sse.publish(data, channel=channels[next(turn) % len(channels)])

    def publisher(plan: Plan) -> None:
        with app.app_context():
            run_gevent(publish, plan)

    @app.get("/bench/publish")
    def trigger() -> str:
        if request.args.get("kind") == "warm":
            sse.publish(WARM, channel=channels[0] if channels else "default")
            return "warm\n"
        gevent.spawn(publisher, Plan.from_query(request.args))
        return "started\n"

    @app.get("/bench/memory")
    def memory() -> str:
        """Allocation sites grown since the previous call (needs PYTHONTRACEMALLOC=1).

        ``?top=N``: how many sites to list (25); the first line is the total growth.
        """
        import tracemalloc

        global _baseline
        snapshot = tracemalloc.take_snapshot()
        previous, _baseline = _baseline, snapshot
        if previous is None:
            return "baseline taken\n"
        stats = snapshot.compare_to(previous, "lineno")
        top = int(request.args.get("top", "25"))
        total = sum(stat.size_diff for stat in stats)
        return f"total: {total:+,} bytes\n" + "".join(f"{stat}\n" for stat in stats[:top])

    return app


_baseline: t.Any = None
