"""Cluster subscriptions survive a slot map that is out of date.

Slots move from one master to another while a worker's slot map still names the
old owner. Streams opened then on the moved channels are sent to the old owner,
which answers ``-MOVED``: those channels are routed again, and the channels
that did not move stay subscribed. Every stream keeps getting its events.
"""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
from redis.cluster import RedisCluster as ClusterClient

from flask_sse_push import ServerSentEvent
from flask_sse_push.brokers.redis.cluster._scripts import keys
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from tests.support.cluster_helpers import migrate_slot

if t.TYPE_CHECKING:
    from flask_sse_push.brokers.base import Subscription
    from tests.support.cluster_helpers import RedisCluster

#: Streams on channels that stay, and streams opened at once on channels that move.
STREAMS = 10
#: Events published on each channel after the move.
EVENTS = 8


def channels_on(cluster: RedisCluster, prefix: str, port: int, count: int) -> list[str]:
    """``count`` channel names served by the master on ``port``, each in a slot of its own."""
    found: dict[int, str] = {}
    probe = cluster.node(port)
    try:
        for n in range(100_000):
            name = f"t{n}"
            channel = keys(prefix, name)[2]
            if cluster.owner_port(channel) == port:
                found.setdefault(int(probe.execute_command("CLUSTER KEYSLOT", channel)), name)
                if len(found) == count:
                    return list(found.values())
    finally:
        probe.close()
    raise AssertionError("could not find channels on one master")


def drain(subs: dict[str, Subscription], seconds: float) -> dict[str, list[str]]:
    """What each stream got within ``seconds``, and 0.3 s more for any extra."""
    got: dict[str, list[str]] = {name: [] for name in subs}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(len(data) < EVENTS for data in got.values()):
        for name, sub in subs.items():
            got[name] += [event.data for event in sub.get(0.01)]
    time.sleep(0.3)
    for name, sub in subs.items():
        got[name] += [event.data for event in sub.get(0.01)]
    return got


@pytest.mark.integration
def test_streams_on_moved_slots_leave_the_other_channels_subscribed(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    source, target = redis_cluster.master_ports()[:2]
    names = channels_on(redis_cluster, prefix, source, 2 * STREAMS)
    staying, moving = names[:STREAMS], names[STREAMS:]
    # One cluster client for every thread, as in a gevent worker: one slot map.
    broker = RedisClusterBroker(ClusterClient(host="127.0.0.1", port=source), prefix=prefix)
    publisher = RedisClusterBroker.from_url(redis_cluster.url, prefix=prefix)
    subs: dict[str, Subscription] = {}
    failures: list[BaseException] = []

    def open_stream(name: str) -> None:
        try:
            subs[name] = broker.subscribe([name])
        except Exception as exc:  # counted below: a refused stream is a failure here
            failures.append(exc)

    try:
        for name in staying:
            open_stream(name)
        for name in moving:  # the broker's slot map goes out of date
            migrate_slot(redis_cluster, keys(prefix, name)[2], target)
        opening = [threading.Thread(target=open_stream, args=(name,)) for name in moving]
        for thread in opening:
            thread.start()
        for thread in opening:
            thread.join(30)
        for n in range(EVENTS):
            for name in names:
                publisher.publish(name, ServerSentEvent(f"{name}-{n}"))
        got = drain(subs, 15)
    finally:
        for sub in subs.values():
            sub.close()
        broker.close()
        publisher.close()
    missing = {
        name: EVENTS - len([d for d in got.get(name, ()) if d.startswith(f"{name}-")])
        for name in names
    }
    assert {name: missing[name] for name in staying} == dict.fromkeys(staying, 0)
    assert {name: missing[name] for name in moving} == dict.fromkeys(moving, 0)
    assert failures == []
    assert got == {name: [f"{name}-{n}" for n in range(EVENTS)] for name in names}
