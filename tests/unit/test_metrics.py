"""Stats, health, logging and Prometheus figures of one app, read in process."""

from __future__ import annotations

import logging
import os
import typing as t

import prometheus_client
import pytest
from flask import Flask

from flask_sse_push import MemoryBroker, SSEPush
from flask_sse_push.metrics import PrometheusMetrics
from flask_sse_push.testing import open_stream
from tests.support.unreachable import UnreachableBroker

if t.TYPE_CHECKING:
    pass


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

    def test_stats_count_the_broker_messages_it_rejected(self, app: Flask) -> None:
        broker = MemoryBroker()
        broker.rejected_messages = 3
        sse = SSEPush(app, broker=broker)
        with app.app_context():
            assert sse.stats()["broker_rejected_messages"] == 3


class TestHealth:
    def test_ok_with_the_memory_broker(self, app: Flask) -> None:
        SSEPush(app)
        response = app.test_client().get("/events/health")
        assert response.status_code == 200
        body = response.get_json()
        assert body.pop("worker")["pid"] == os.getpid()
        assert body == {"status": "ok", "clients_connected": 0}

    def test_503_and_the_reason_in_stats_when_the_broker_is_down(self, app: Flask) -> None:
        sse = SSEPush(app, broker=UnreachableBroker())
        response = app.test_client().get("/events/health")
        assert response.status_code == 503
        body = response.get_json()
        assert body.pop("worker")["pid"] == os.getpid()
        assert body == {"status": "unavailable"}
        with app.app_context():
            assert sse.stats()["broker_problem"] == "no route to broker"


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
