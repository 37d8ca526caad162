"""A real Redis Cluster, real ``gunicorn -k gevent`` workers, raw-socket clients."""

from __future__ import annotations

import itertools
import time
import typing as t
import uuid

import pytest

from flask_sse_push import Publisher
from flask_sse_push.brokers.redis import SUBSCRIBER_NAME
from flask_sse_push.brokers.redis.cluster._scripts import keys
from tests.support.redis_helpers import SSEClient, pump
from tests.support.servers import gunicorn

if t.TYPE_CHECKING:
    from tests.support.cluster_helpers import RedisCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.redis_app:create_app()"
WORKERS = 2


def app_env(cluster: RedisCluster, key_prefix: str) -> dict[str, str]:
    return {
        "SSE_PUSH_BROKER_URL": cluster.url,
        "SSE_PUSH_REDIS_PREFIX": key_prefix,
        "SSE_PUSH_KEEPALIVE": "0.3",
    }


def path(channels: list[str]) -> str:
    return "/events?" + "&".join(f"channel={name}" for name in channels)


def by_master(cluster: RedisCluster, key_prefix: str, names: list[str]) -> dict[int, list[str]]:
    owners: dict[int, list[str]] = {}
    for name in names:
        owners.setdefault(cluster.owner_port(keys(key_prefix, name)[2]), []).append(name)
    return owners


def all_answered(clients: list[SSEClient]) -> t.Callable[[], bool]:
    return lambda: all(c.status is not None for c in clients)


def open_streams(port: int, plans: list[list[str]]) -> list[SSEClient]:
    """One stream per plan, retried until both workers serve some."""
    for _ in range(20):
        clients = [SSEClient(port, path(plan)) for plan in plans]
        pump(clients, all_answered(clients), what="headers")
        assert {c.status for c in clients} == {200}
        if len({c.worker for c in clients}) == WORKERS:
            return clients
        for client in clients:
            client.close()
        time.sleep(0.5)  # a worker is still booting
    pytest.fail("every stream landed on one worker")


def expected_for(plan: list[str], published: list[tuple[str, str]]) -> list[str]:
    return [data for channel, data in published if channel in plan]


def per_channel_order(seen: list[str], plan: list[str]) -> dict[str, list[str]]:
    return {name: [d for d in seen if d.split("/")[0] == name] for name in plan}


def test_fanout_over_three_shards_to_two_workers(redis_cluster: RedisCluster) -> None:
    """100 streams over 30 channels, some spanning three masters; 10 events a channel.

    Every stream gets exactly its events, once, in order per channel. Each
    channel is subscribed on its owning master only, and each master sees at
    most one subscriber connection per worker.
    """
    key_prefix = f"fan{uuid.uuid4().hex[:6]}:"
    channels = [f"c{n}" for n in range(30)]
    owners = by_master(redis_cluster, key_prefix, channels)
    assert len(owners) == 3, owners
    spanning = [list(triple) for triple in zip(*owners.values(), strict=False)]
    plans = [[channels[n % 30]] for n in range(70)] + [
        spanning[n % len(spanning)] for n in range(30)
    ]
    with gunicorn(
        APP, env=app_env(redis_cluster, key_prefix), workers=WORKERS, extra_args=("--preload",)
    ) as site:
        clients = open_streams(site.port, plans)
        try:
            published: list[tuple[str, str]] = []
            with Publisher(redis_cluster.url, prefix=key_prefix) as publisher:
                for n, channel in itertools.product(range(10), channels):
                    publisher.publish(f"{channel}/{n}", channel=channel)
                    published.append((channel, f"{channel}/{n}"))
            want = [expected_for(plan, published) for plan in plans]
            pump(
                clients,
                lambda: all(len(c.events) >= len(w) for c, w in zip(clients, want, strict=True)),
                30,
                "every event",
            )
            time.sleep(0.3)  # anything extra would arrive now
            for client, plan, wanted in zip(clients, plans, want, strict=True):
                client.feed()
                seen = [e.data for e in client.events]
                assert [e.event for e in client.events] == ["message"] * len(seen)
                assert sorted(seen) == sorted(wanted), plan
                assert per_channel_order(seen, plan) == per_channel_order(wanted, plan)

            workers_of: dict[str, set[str | None]] = {name: set() for name in channels}
            for client, plan in zip(clients, plans, strict=True):
                for name in plan:
                    workers_of[name].add(client.worker)
            for port in redis_cluster.master_ports():
                node = redis_cluster.node(port)
                try:
                    numsub = dict(
                        node.pubsub_shardnumsub(*[keys(key_prefix, c)[2] for c in channels])
                    )
                    for name in channels:
                        mine = name in owners[port]
                        wanted_subs = len(workers_of[name]) if mine else 0
                        assert numsub[keys(key_prefix, name)[2]] == wanted_subs, (port, name)
                    listed = node.client_list()
                    subscribers = [c for c in listed if c.get("name") == SUBSCRIBER_NAME]
                    assert len(subscribers) == WORKERS, port
                    # Per worker: one subscriber plus at most 4 pooled connections,
                    # and this inspecting client.
                    assert len(listed) <= WORKERS * (1 + 4) + 1, listed
                finally:
                    node.close()
        finally:
            for client in clients:
                client.close()


def test_multi_shard_client_resumes_on_the_other_worker(redis_cluster: RedisCluster) -> None:
    """A client of channels on two shards misses events on both; another worker replays them.

    The two workers are two gunicorn servers on the same cluster, so the client
    surely lands on the other one.
    """
    key_prefix = f"res{uuid.uuid4().hex[:6]}:"
    owners = by_master(redis_cluster, key_prefix, [f"r{n}" for n in range(20)])
    one, two = (names[0] for names in list(owners.values())[:2])
    env = app_env(redis_cluster, key_prefix)
    with (
        gunicorn(APP, env=env) as first,
        gunicorn(APP, env=env) as second,
        Publisher(redis_cluster.url, prefix=key_prefix) as publisher,
    ):
        client = SSEClient(first.port, path([one, two]))
        pump([client], all_answered([client]), what="headers")
        publisher.publish("seen-1", channel=one)
        publisher.publish("seen-2", channel=two)
        pump([client], lambda: len(client.events) == 2, what="the first events")
        first_worker = client.worker
        client.close()
        missed = []
        for n in range(3):
            for name in (one, two):
                publisher.publish(f"{name}-{n}", channel=name)
                missed.append(f"{name}-{n}")
        cursor = client.last_event_id
        assert cursor is not None and cursor.startswith("~")
        resumed = SSEClient(second.port, path([one, two]), last_event_id=cursor)
        pump([resumed], lambda: len(resumed.events) >= len(missed), what="the replay")
        publisher.publish("live", channel=two)
        pump([resumed], lambda: len(resumed.events) > len(missed), what="live")
        resumed.close()
    assert resumed.worker != first_worker
    assert [e.event for e in resumed.events] == ["message"] * (len(missed) + 1)
    assert [e.data for e in resumed.events] == [*missed, "live"]
