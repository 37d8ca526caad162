"""What arrives on the brokers' own pub/sub channels is checked before it is trusted.

Anyone with PUBLISH (or SPUBLISH) rights on the Redis the brokers use can put a
message on a channel's announcement channel. A message that is malformed, or
names an entry id its stream does not hold and that lies ahead of Redis' clock,
is dropped and counted; it moves no client's cursor, so neither that channel's
real events nor other channels' (nor streams opened later) go missing.
"""

from __future__ import annotations

import time
import typing as t

import pytest
import redis

from flask_sse_push import ServerSentEvent
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.brokers.redis.cluster._scripts import keys
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from tests.support.redis_helpers import take

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from flask_sse_push.brokers.base import Broker
    from tests.support.cluster_helpers import RedisCluster
    from tests.support.servers import RedisServer


def forgeries() -> list[str]:
    """Announcements no publish made: ids ahead of Redis' clock, and wrong shapes."""
    now = int(time.time() * 1000)
    return [
        f"{now + 10**9}-0 " + '{"data":"forged far"}',
        f"{now + 60_000}-0 " + '{"data":"forged a minute ahead"}',
        f"{now + 10**9}-0 " + '{"data":1}',
        f"{now + 10**9}-0",
        "999999999999999-999999999999999 {}",
        "not an announcement",
        "1-0 [1, 2]",
    ]


def check_nothing_is_silenced(broker: Broker, forge: Callable[[str], object]) -> None:
    with broker.subscribe(["forged"]) as forged, broker.subscribe(["other"]) as other:
        broker.publish("forged", ServerSentEvent("f0"))
        broker.publish("other", ServerSentEvent("o0"))
        assert [e.data for e in take(forged, 1)] == ["f0"]
        assert [e.data for e in take(other, 1)] == ["o0"]
        for payload in forgeries():
            forge(payload)
        time.sleep(0.3)  # the listener reads them before the real events
        with broker.subscribe(["later"]) as later:
            for n in range(1, 4):
                broker.publish("forged", ServerSentEvent(f"f{n}"))
                broker.publish("other", ServerSentEvent(f"o{n}"))
                broker.publish("later", ServerSentEvent(f"l{n}"))
            got = [take(sub, 3, timeout=5) for sub in (forged, other, later)]
            time.sleep(0.2)
            extra = [sub.get(0.05) for sub in (forged, other, later)]
    assert [[e.data for e in events] for events in got] == [
        ["f1", "f2", "f3"],
        ["o1", "o2", "o3"],
        ["l1", "l2", "l3"],
    ]
    assert extra == [[], [], []]
    assert broker.rejected_messages == len(forgeries())


@pytest.mark.integration
def test_a_forged_announcement_silences_nothing(redis_server: RedisServer, prefix: str) -> None:
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix)
    client = redis.Redis.from_url(redis_server.url)
    try:
        channel = f"{prefix}channel:forged"
        check_nothing_is_silenced(broker, lambda payload: client.publish(channel, payload))
    finally:
        client.close()
        broker.close()


@pytest.mark.integration
def test_a_forged_sharded_announcement_silences_nothing(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    broker = RedisClusterBroker.from_url(redis_cluster.url, prefix=prefix)
    channel = keys(prefix, "forged")[2]
    node = redis_cluster.node(redis_cluster.owner_port(channel))
    try:
        check_nothing_is_silenced(
            broker, lambda payload: node.execute_command("SPUBLISH", channel, payload)
        )
    finally:
        node.close()
        broker.close()
