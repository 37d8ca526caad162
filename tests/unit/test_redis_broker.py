"""RedisBroker and Publisher on fakeredis and on unreachable URLs: keys, config, outages, health."""

from __future__ import annotations

import json
import typing as t

import fakeredis
import pytest
import redis
from flask import Flask

from flask_sse_push import (
    BrokerError,
    ChannelError,
    Publisher,
    ServerSentEvent,
    SSEPush,
    SubscriptionClosed,
)
from flask_sse_push.brokers.redis import RedisBroker
from tests.support.servers import free_port

if t.TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def fake() -> Iterator[RedisBroker]:
    """A broker on a fresh fakeredis server."""
    broker = RedisBroker(fakeredis.FakeRedis(server=fakeredis.FakeServer()), prefix="p:")
    yield broker
    broker.close()


class TestKeys:
    def test_channel_names_map_only_to_prefixed_keys(self, fake: RedisBroker) -> None:
        """A publish touches the channel's stream and id index, the clock, and nothing else."""
        client = fake.client
        with client.pubsub() as watch:  # type: ignore[no-untyped-call, unused-ignore]
            watch.subscribe("p:channel:orders")
            fake.publish("orders", ServerSentEvent("hi", event="new", id="o-1", retry=10))
            messages = [watch.get_message(timeout=1.0) for _ in range(2)]
        assert sorted(client.keys("*")) == [b"p:clock", b"p:ids:orders", b"p:stream:orders"]
        assert messages[1] is not None
        entry_id, _, body = messages[1]["data"].decode().partition(" ")
        assert client.hget("p:ids:orders", "o-1") == entry_id.encode()
        assert json.loads(body) == {"data": "hi", "event": "new", "id": "o-1", "retry": 10}

    def test_invalid_channel_names_never_reach_redis(self, fake: RedisBroker) -> None:
        """Names that could address other keys are refused before any command."""
        for name in ["", "a b", "*", "x\r\nFLUSHALL", "é"]:
            with pytest.raises(ChannelError):
                fake.publish(name, ServerSentEvent("x"))
            with pytest.raises(ChannelError):
                fake.subscribe(["ok", name])
        assert fake.client.keys("*") == []
        assert fake.subscriber_count() == 0

    def test_history_and_queue_size_must_be_positive(self) -> None:
        """A stream needs room for at least the newest event."""
        client = fakeredis.FakeRedis()
        with pytest.raises(ValueError, match="history >= 1"):
            RedisBroker(client, history=0)
        with pytest.raises(ValueError, match="queue_size >= 1"):
            RedisBroker(client, queue_size=0)

    def test_config_selects_the_redis_broker(self) -> None:
        """SSE_PUSH_BROKER_URL, _HISTORY, _QUEUE_SIZE and _REDIS_PREFIX reach the broker."""
        app = Flask(__name__)
        app.config.update(
            SSE_PUSH_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",  # connects lazily
            SSE_PUSH_HISTORY=7,
            SSE_PUSH_QUEUE_SIZE=9,
            SSE_PUSH_REDIS_PREFIX="cfg:",
        )
        SSEPush(app)
        broker = app.extensions["sse_push"].broker
        try:
            assert isinstance(broker, RedisBroker)
            assert (broker.history, broker.queue_size, broker.prefix) == (7, 9, "cfg:")
        finally:
            broker.close()


class TestOutage:
    def test_publish_while_redis_is_down_raises_broker_error(self) -> None:
        """The error says what failed and how to fix it, and keeps the cause."""
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(BrokerError, match="redis-server is running") as caught:
                broker.publish("a", ServerSentEvent("x"))
            assert isinstance(caught.value.__cause__, redis.ConnectionError)
            with pytest.raises(BrokerError):
                broker.cursor(["a"])
        finally:
            broker.close()

    def test_subscribe_while_redis_is_down_raises_broker_error(self) -> None:
        """A subscription cannot start without Redis, first time or later."""
        broker = RedisBroker.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            for _ in range(3):
                with pytest.raises(BrokerError, match="redis-server is running"):
                    broker.subscribe(["a"])
            assert broker.subscriber_count() == 0
        finally:
            broker.close()


class TestHealth:
    def test_ping_follows_a_fakeredis_outage(self) -> None:
        """ping() fails while the server is unreachable, and passes again once it is back."""
        server = fakeredis.FakeServer()
        broker = RedisBroker(fakeredis.FakeRedis(server=server))
        try:
            broker.ping()
            server.connected = False
            with pytest.raises(BrokerError, match="Could not run PING on Redis"):
                broker.ping()
            server.connected = True
            broker.ping()
        finally:
            broker.close()


class TestPublisher:
    def test_refuses_urls_other_processes_cannot_reach(self) -> None:
        """The in-process broker is useless from outside the web process."""
        for url in ["memory://", "http://localhost", "localhost:6379"]:
            with pytest.raises(ValueError, match="Redis URL"):
                Publisher(url)

    def test_reports_redis_outage(self) -> None:
        with Publisher(f"redis://127.0.0.1:{free_port()}/0") as publisher:
            with pytest.raises(BrokerError):
                publisher.publish("x")

    def test_redis_broker_is_exported_lazily(self) -> None:
        import flask_sse_push

        assert flask_sse_push.RedisBroker is RedisBroker
        with pytest.raises(AttributeError):
            flask_sse_push.NoSuchThing  # noqa: B018


class TestSubscriptionEnd:
    def test_closed_subscription_does_not_ask_to_reconnect(self, fake: RedisBroker) -> None:
        sub = fake.subscribe(["a"])
        sub.close()
        with pytest.raises(SubscriptionClosed) as closed:
            sub.get(0)
        assert closed.value.reconnect is False
