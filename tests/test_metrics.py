from __future__ import annotations

import logging
import os
import re
import time
import typing as t

import httpx
import prometheus_client
import pytest
from flask import Flask

from flask_sse_push import MemoryBroker, ServerSentEvent, SSEPush
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.metrics import PrometheusMetrics
from flask_sse_push.testing import open_stream
from tests.raw_client import RawStream, pump
from tests.servers import RedisServer, free_port, gunicorn
from tests.unreachable import UnreachableBroker

if t.TYPE_CHECKING:
    from pathlib import Path


class TestStats:
    def test_figures_after_traffic(self, app: Flask) -> None:
        app.config["SSE_PUSH_QUEUE_SIZE"] = 3
        sse = SSEPush(app)
        client = app.test_client()
        with app.app_context():
            assert sse.stats()["clients_connected"] == 0
        a = open_stream(client, channels=["a"])
        ab = open_stream(client, channels=["a", "b"])
        with app.app_context():
            first = sse.publish("1", channel="a")
            sse.publish("2", channel="b")
        assert [e.data for e in a.events(1)] == ["1"]
        assert [e.data for e in ab.events(2)] == ["1", "2"]
        resumed = open_stream(client, channels=["a"], last_event_id=first)
        unknown = open_stream(client, channels=["b"], last_event_id="nope")
        assert unknown.next_event().event == "reset"
        with app.app_context():
            stats = sse.stats()
        assert stats["clients_connected"] == 4
        assert stats["clients_by_channel"] == {"a": 3, "b": 2}
        assert stats["events_published"] == 2
        assert stats["deliveries"] == 4
        assert (stats["replays"], stats["resets"]) == (2, 1)
        for stream in (a, ab, resumed, unknown):
            stream.close()
        with app.app_context():
            stats = sse.stats()
        assert stats["clients_connected"] == 0
        assert stats["clients_by_channel"] == {}
        assert stats["disconnects"] == {"client": 4}

    def test_overflow_and_lag(self, app: Flask) -> None:
        """A client that does not read shows up as lag, then as an overflow."""
        app.config["SSE_PUSH_QUEUE_SIZE"] = 5
        sse = SSEPush(app)
        with app.app_context():
            # Not iterated: like a client that stopped reading.
            response = app.test_client().get("/events?channel=a", buffered=False)
            for n in range(3):
                sse.publish(str(n), channel="a")
            assert sse.stats()["lag"] == 3
            for n in range(20):
                sse.publish(str(n), channel="a")
            body = b"".join(t.cast("t.Iterable[bytes]", response.response))
            response.close()
            stats = sse.stats()
        assert b"closed: overflow" in body
        assert stats["overflow_disconnects"] == 1
        assert stats["disconnects"] == {"overflow": 1}
        assert stats["lag"] == 0

    def test_stats_count_broker_reconnects(self, app: Flask) -> None:
        broker = MemoryBroker()
        broker.reconnects = 2
        sse = SSEPush(app, broker=broker)
        with app.app_context():
            assert sse.stats()["broker_reconnects"] == 2


class TestHealth:
    def test_ok_with_the_memory_broker(self, app: Flask) -> None:
        SSEPush(app)
        response = app.test_client().get("/events/health")
        assert response.status_code == 200
        body = response.get_json()
        assert body.pop("worker")["pid"] == os.getpid()
        assert body == {"status": "ok", "clients_connected": 0}

    def test_503_with_reason_when_the_broker_is_down(self, app: Flask) -> None:
        SSEPush(app, broker=UnreachableBroker())
        response = app.test_client().get("/events/health")
        assert response.status_code == 503
        body = response.get_json()
        assert body.pop("worker")["pid"] == os.getpid()
        assert body == {"status": "unavailable", "reason": "no route to broker"}

    @pytest.mark.integration
    def test_503_then_200_with_a_real_redis(self, app: Flask) -> None:
        port = free_port()
        SSEPush(app, broker=RedisBroker.from_url(f"redis://127.0.0.1:{port}/0"))
        client = app.test_client()
        down = client.get("/events/health")
        assert down.status_code == 503
        assert "redis" in down.get_json()["reason"].lower()
        with RedisServer(port):
            assert client.get("/events/health").status_code == 200
        with app.app_context():
            app.extensions["sse_push"].broker.close()


class TestLogging:
    def test_connect_and_disconnect_are_logged_without_event_data(
        self, app: Flask, caplog: pytest.LogCaptureFixture
    ) -> None:
        app.config["SSE_PUSH_QUEUE_SIZE"] = 2
        sse = SSEPush(app)
        caplog.set_level(logging.INFO, logger="flask_sse_push")
        with app.app_context():
            response = app.test_client().get("/events?channel=secret-room", buffered=False)
            for n in range(10):
                sse.publish(f"top secret payload {n}", channel="secret-room")
            b"".join(t.cast("t.Iterable[bytes]", response.response))
            response.close()
            sse.revoke("secret-room")
        messages = [r.getMessage() for r in caplog.records if r.name == "flask_sse_push"]
        assert any("opened" in m and "secret-room" in m for m in messages)
        overflow = [
            r for r in caplog.records if "closed" in r.getMessage() and "overflow" in r.getMessage()
        ]
        assert overflow and overflow[0].levelno == logging.WARNING
        assert any("revoke" in m for m in messages)
        assert not any("payload" in m for m in messages)


class TestPrometheus:
    def test_metric_names_and_values_after_traffic(self, app: Flask) -> None:
        registry = prometheus_client.CollectorRegistry()
        sse = SSEPush(app)
        with app.app_context():
            state = app.extensions["sse_push"]
            state.metrics = PrometheusMetrics(state.broker, registry)
            stream = open_stream(app.test_client(), channels=["a"])
            sse.publish("x", channel="a")
            assert stream.next_event().data == "x"
            value = registry.get_sample_value
            assert value("sse_push_clients_connected") == 1
            assert value("sse_push_events_published_total") == 1
            assert value("sse_push_deliveries_total") == 1
            stream.close()
            assert value("sse_push_clients_connected") == 0
            assert value("sse_push_disconnects_total", {"reason": "client"}) == 1
            assert value("sse_push_replays_total") == 0
            assert value("sse_push_resets_total") == 0
            assert value("sse_push_broker_reconnects_total") == 0

    def test_two_apps_share_the_metrics_instead_of_failing(self) -> None:
        registry = prometheus_client.CollectorRegistry()
        first = PrometheusMetrics(MemoryBroker(), registry)
        second = PrometheusMetrics(MemoryBroker(), registry)
        first.published()
        second.published()
        assert registry.get_sample_value("sse_push_events_published_total") == 2


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
        with gunicorn("tests.metrics_app:create_app()", env=env, workers=2) as server:
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
