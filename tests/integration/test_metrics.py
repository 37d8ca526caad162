"""Health and Prometheus figures against real processes: a redis-server that comes
up late, and two gunicorn workers whose multiprocess figures add up."""

from __future__ import annotations

import os
import re
import time
import typing as t

import httpx
import pytest
from flask import Flask

from flask_sse_push import ServerSentEvent, SSEPush
from flask_sse_push.brokers.redis import RedisBroker
from tests.support.raw_client import RawStream, pump
from tests.support.servers import RedisServer, free_port, gunicorn

if t.TYPE_CHECKING:
    from pathlib import Path


class TestHealth:
    @pytest.mark.integration
    def test_503_then_200_with_a_real_redis(self, app: Flask) -> None:
        port = free_port()
        SSEPush(app, broker=RedisBroker.from_url(f"redis://127.0.0.1:{port}/0"))
        client = app.test_client()
        down = client.get("/events/health")
        assert down.status_code == 503
        body = down.get_json()
        assert body.pop("worker")["pid"] == os.getpid()
        assert body == {"status": "unavailable"}
        with app.app_context():
            assert "redis" in app.extensions["sse_push"].metrics.broker_problem.lower()
        with RedisServer(port):
            assert client.get("/events/health").status_code == 200
        with app.app_context():
            app.extensions["sse_push"].broker.close()


def _all_answered(streams: list[RawStream]) -> t.Callable[[], bool]:
    return lambda: all(stream.status for stream in streams)


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics output"
    return float(match.group(1))


@pytest.mark.integration
@pytest.mark.slow
def test_multiprocess_figures_add_up_over_gunicorn_workers(tmp_path: Path) -> None:
    """Two gunicorn workers, streams on both: /metrics (any worker) shows the sums."""
    events = 5
    with RedisServer() as redis_server:
        env = {
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            "SSE_PUSH_BROKER_URL": redis_server.url,
        }
        with gunicorn("tests.apps.metrics_app:create_app()", env=env, workers=2) as server:
            # gevent workers accept greedily: open streams until both workers have some.
            clients: list[RawStream] = []
            try:
                for _ in range(100):  # the second worker may still be booting
                    batch = [RawStream(server.port, "/events?channel=m") for _ in range(10)]
                    clients += batch
                    assert pump(batch, _all_answered(batch), 20)
                    if len({c.headers.get("x-worker-pid") for c in clients}) == 2:
                        break
                    time.sleep(0.2)
                assert len({c.headers.get("x-worker-pid") for c in clients}) == 2
                streams = len(clients)
                publisher = RedisBroker.from_url(redis_server.url)
                for n in range(events):
                    publisher.publish("m", ServerSentEvent(str(n)))
                publisher.close()
                assert pump(clients, lambda: all(c.event_count >= events for c in clients), 20)
                text = httpx.get(f"{server.url}/metrics", timeout=10).text
                assert _sample(text, "sse_push_clients_connected") == streams
                assert _sample(text, "sse_push_deliveries_total") == streams * events
                files = {name for name in os.listdir(tmp_path) if name.startswith("gauge_livesum")}
                assert len(files) == 2, files  # one file per worker, summed by the collector
            finally:
                for client in clients:
                    client.close()
