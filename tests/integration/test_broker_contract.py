"""The broker contract of ``tests/unit/test_broker_contract.py`` on a real
redis-server and a real Redis Cluster: the same test classes, other brokers."""

from __future__ import annotations

import typing as t

import pytest

from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from tests.unit import test_broker_contract as contract

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from flask_sse_push import Broker
    from tests.support.cluster_helpers import RedisCluster
    from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "redis_cluster"])
def make_broker(request: pytest.FixtureRequest) -> Iterator[contract.BrokerFactory]:
    """Make brokers of one kind, all on one server under one key prefix; they are
    closed afterwards."""
    kind: str = request.param
    made: list[Broker] = []
    key_prefix: str = request.getfixturevalue("prefix")
    server: RedisServer | None = None
    cluster: RedisCluster | None = None
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
    else:
        cluster = request.getfixturevalue("redis_cluster")

    def make(*, history: int = 1000, queue_size: int = 1000) -> Broker:
        broker: Broker
        if cluster is not None:
            broker = RedisClusterBroker.from_url(
                cluster.url, history=history, queue_size=queue_size, prefix=key_prefix
            )
        else:
            assert server is not None
            broker = RedisBroker.from_url(
                server.url, history=history, queue_size=queue_size, prefix=key_prefix
            )
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def broker(make_broker: contract.BrokerFactory) -> Broker:
    return make_broker()


class TestLiveDelivery(contract.TestLiveDelivery):
    pass


class TestReplay(contract.TestReplay):
    pass


class TestExplicitIds(contract.TestExplicitIds):
    pass


class TestCursorScope(contract.TestCursorScope):
    pass


class TestEnding(contract.TestEnding):
    pass


class TestHealth(contract.TestHealth):
    pass


class TestHandover(contract.TestHandover):
    pass


class TestConsumer(contract.TestConsumer):
    pass


class TestPark(contract.TestPark):
    pass
