"""How many Redis connections do N streams on W gunicorn workers cost?

Usage (from the repository root; needs redis-server and the test extras)::

    python bench/redis_connections.py

It starts a redis-server and ``gunicorn -k gevent -w W`` serving
``tests/apps/redis_app.py``, opens raw-socket streams, and counts ``CLIENT LIST``
entries other than its own. "resumed" streams reconnect with ``Last-Event-ID``,
which reads the history through the workers' pools; a publish then checks that
every stream is live. Prints a Markdown table.
"""

from __future__ import annotations

import sys
import time
import typing as t
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_sse_push import Publisher  # noqa: E402
from flask_sse_push.brokers.redis import SUBSCRIBER_NAME  # noqa: E402
from tests.support.redis_helpers import SSEClient, pump, redis_client, sse_clients  # noqa: E402
from tests.support.servers import RedisServer, gunicorn  # noqa: E402

#: (workers, streams, resumed) rows to measure.
ROWS = [(2, 200, False), (4, 1000, False), (4, 1000, True)]


def measure(server: RedisServer, workers: int, streams: int, resumed: bool) -> dict[str, t.Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    env = {"SSE_PUSH_BROKER_URL": server.url, "SSE_PUSH_REDIS_PREFIX": prefix}
    with gunicorn("tests.apps.redis_app:create_app()", env=env, workers=workers) as site:
        time.sleep(1.0)  # let every worker boot, so the streams spread over all of them
        cursor = None
        if resumed:
            with Publisher(server.url, prefix=prefix) as publisher:
                cursor = publisher.publish("start", channel="bench")
        clients = [
            SSEClient(site.port, f"/events?channel=bench&channel=c{n % 50}", last_event_id=cursor)
            for n in range(streams)
        ]
        try:
            pump(clients, lambda: all(c.status is not None for c in clients), 60, "headers")
            inspector = redis_client(server)
            try:
                connections = sse_clients(inspector)
            finally:
                inspector.close()
            with Publisher(server.url, prefix=prefix) as publisher:
                publisher.publish("ping", channel="bench")
            pump(
                clients, lambda: all(c.events and c.events[-1].data == "ping" for c in clients), 60
            )
        finally:
            for client in clients:
                client.close()
    subscribers = sum(1 for c in connections if c["name"] == SUBSCRIBER_NAME)
    return {
        "workers": workers,
        "streams": streams,
        "resumed": "yes" if resumed else "no",
        "worker pids": len({c.worker for c in clients}),
        "CLIENT LIST": len(connections),
        "subscriber": subscribers,
        "pooled": len(connections) - subscribers,
    }


def main() -> None:
    rows = []
    with RedisServer() as server:
        for workers, streams, resumed in ROWS:
            rows.append(measure(server, workers, streams, resumed))
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
