"""Publishing over HTTP against ``sse.publish()``, in one run.

Usage (from the repository root; needs redis-server and the test extras)::

    python bench/publish_http.py

It starts a redis-server and ``gunicorn -w 2`` (this package's gevent worker
class) serving ``tests/control_app.py`` with a publish token, then publishes
to one channel with no stream open, so only the publishing path is measured:

- ``sse.publish()`` in this process, in an app context on the same Redis;
- ``POST /events/publish``, one event per request, over one keep-alive
  connection, then from 8 threads with a connection each;
- ``POST /events/publish`` with lists of 100 events.

Prints a Markdown table of events per second.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from flask import Flask  # noqa: E402
from tests.servers import RedisServer, gunicorn  # noqa: E402

from flask_sse_push import SSEPush  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
EVENTS = 4000
THREADS = 8
BATCH = 100


def in_process(url: str, prefix: str) -> float:
    app = Flask(__name__)
    app.config.update(SSE_PUSH_BROKER_URL=url, SSE_PUSH_REDIS_PREFIX=prefix)
    sse = SSEPush(app)
    with app.app_context():
        start = time.perf_counter()
        for n in range(EVENTS):
            sse.publish({"n": n}, channel="bench")
        took = time.perf_counter() - start
        sse.broker.close()
    return EVENTS / took


def over_http(base: str, threads: int, batch: int) -> float:
    per_thread = EVENTS // threads
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def post_all() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            for start in range(0, per_thread, batch):
                size = min(batch, per_thread - start)
                body = [{"channel": "bench", "data": {"n": start + i}} for i in range(size)]
                answer = client.post("/events/publish", json=body if batch > 1 else body[0])
                assert answer.status_code == 200, answer.text

    workers = [threading.Thread(target=post_all) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return per_thread * threads / (time.perf_counter() - start)


def main() -> None:
    with RedisServer() as server:
        prefix = f"benchpub{uuid.uuid4().hex[:6]}:"
        env = {
            "SSE_PUSH_BROKER_URL": server.url,
            "SSE_PUSH_REDIS_PREFIX": prefix,
            "SSE_PUSH_PUBLISH_TOKEN": TOKEN,
        }
        rows = [("sse.publish(), one thread in this process", in_process(server.url, prefix))]
        with gunicorn("tests.control_app:create_app()", env=env, workers=2) as site:
            time.sleep(1.0)  # let both workers boot
            over_http(site.url, 1, 1)  # warm up connections and pools
            rows.append(
                ("POST /events/publish, 1 event per request, 1 client", over_http(site.url, 1, 1))
            )
            rows.append(
                (
                    f"POST /events/publish, 1 event per request, {THREADS} clients",
                    over_http(site.url, THREADS, 1),
                )
            )
            rows.append(
                (
                    f"POST /events/publish, {BATCH} events per request, 1 client",
                    over_http(site.url, 1, BATCH),
                )
            )
    print(f"| {EVENTS} events to Redis | events/s |")
    print("|---|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
