"""A live client's catch-up after the subscriber connection broke keeps to the replay budget.

While a listener's connection to Redis is down (a restart, a failover), what
is published reaches its clients afterwards from the streams, read in pages:
a client that missed more than its replay budget gets the oldest events that
fit, then a ``reset`` (reason ``budget``), as a resume does; never everything
at once, never a silent cut. On a real redis-server and a real Redis Cluster.
"""

from __future__ import annotations

import json
import time
import typing as t

import pytest

from flask_sse_push import Broker, ServerSentEvent
from flask_sse_push.brokers import ReplayBudget
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from tests.support.redis_helpers import redis_client, take, wait_until

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from flask_sse_push import Subscription
    from tests.support.cluster_helpers import RedisCluster
    from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

#: A broker with a small budget, and a way to drop its subscriber connections.
Setup: t.TypeAlias = "tuple[Broker, Callable[[], int]]"


@pytest.fixture(params=["redis", "redis_cluster"])
def setup(request: pytest.FixtureRequest, prefix: str) -> Iterator[Setup]:
    budget = ReplayBudget(events=50)
    broker: Broker
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        broker = RedisBroker.from_url(server.url, prefix=prefix, replay_budget=budget)
        clients = [redis_client(server)]
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        broker = RedisClusterBroker.from_url(cluster.url, prefix=prefix, replay_budget=budget)
        clients = [cluster.node(port) for port in cluster.master_ports()]

    def kill() -> int:
        return sum(int(client.client_kill_filter(_type="pubsub")) for client in clients)

    yield broker, kill
    broker.close()
    for client in clients:
        client.close()


def published_while_away(broker: Broker, kill: Callable[[], int], channel: str, count: int) -> None:
    """Drop the subscriber connections and publish ``count`` events on ``channel``
    before the listener may reconnect (it needs its lock to notice the loss)."""
    listener: t.Any = broker._listeners.current  # type: ignore[attr-defined]
    with listener.lock:
        assert kill() >= 1
        for n in range(count):
            broker.publish(channel, ServerSentEvent(str(n)))
    wait_until(lambda: getattr(broker, "reconnects", 0) >= 1, 30.0, "the reconnect")


def read_until_quiet(sub: Subscription, quiet: float = 1.0) -> list[ServerSentEvent]:
    """Everything ``sub`` gives until nothing came for ``quiet`` seconds (``get`` may
    return early with nothing)."""
    events: list[ServerSentEvent] = []
    deadline = time.monotonic() + 60.0
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        if time.monotonic() > deadline:
            pytest.fail(f"still receiving: {len(events)} events")
        batch = sub.get(0.1)
        if batch:
            events += batch
            last = time.monotonic()
    return events


def test_a_catch_up_past_the_budget_gets_what_fits_then_a_reset(setup: Setup) -> None:
    """300 events missed, a budget of 50: the oldest 50 in order, a ``reset``, then live."""
    broker, kill = setup
    with broker.subscribe(["deep"]) as sub:
        broker.publish("deep", ServerSentEvent("before"))
        assert [event.data for event in take(sub, 1)] == ["before"]
        published_while_away(broker, kill, "deep", 300)
        got = read_until_quiet(sub)
        broker.publish("deep", ServerSentEvent("live"))
        live = take(sub, 1)
    assert [event.data for event in got[:-1]] == [str(n) for n in range(50)]
    reset = got[-1]
    assert reset.event == "reset"
    assert json.loads(reset.data)["reason"] == "budget"
    assert [event.data for event in live] == ["live"]
    # The reset's cursor is past everything missed: resuming from it gets only "live".
    assert reset.id is not None
    with broker.subscribe(["deep"], last_event_id=reset.id) as again:
        assert [event.data for event in read_until_quiet(again)] == ["live"]


def test_a_catch_up_within_the_budget_is_whole(setup: Setup) -> None:
    broker, kill = setup
    with broker.subscribe(["shallow"]) as sub:
        broker.publish("shallow", ServerSentEvent("before"))
        take(sub, 1)
        published_while_away(broker, kill, "shallow", 40)
        got = read_until_quiet(sub)
    assert [event.data for event in got] == [str(n) for n in range(40)]


def test_a_single_node_catch_up_over_channels_keeps_id_order_within_the_budget(
    redis_server: RedisServer, prefix: str
) -> None:
    """Two channels, 120 events interleaved: the oldest 50 across both, in id order."""
    broker = RedisBroker.from_url(
        redis_server.url, prefix=prefix, replay_budget=ReplayBudget(events=50)
    )
    inspector = redis_client(redis_server)
    try:
        with broker.subscribe(["x", "y"]) as sub:
            broker.publish("x", ServerSentEvent("before"))
            take(sub, 1)
            listener = broker._listeners.current
            assert listener is not None
            with listener.lock:
                assert inspector.client_kill_filter(_type="pubsub") == 1
                ids = [broker.publish("xy"[n % 3 % 2], ServerSentEvent(str(n))) for n in range(120)]
            wait_until(lambda: broker.reconnects == 1, 30.0, "the reconnect")
            got = read_until_quiet(sub)
        assert [event.id for event in got[:-1]] == ids[:50]
        assert got[-1].event == "reset"
        assert json.loads(got[-1].data) == {"last_event_id": ids[49], "reason": "budget"}
    finally:
        broker.close()
        inspector.close()
