"""``kill -9`` a Redis Cluster master under load: clients miss nothing, or get a ``reset``.

The module starts its own cluster (3 masters, each with a replica) because it
kills one of them.
"""

from __future__ import annotations

import json
import threading
import time
import typing as t
import uuid

import pytest

from flask_sse_push import BrokerError, Publisher
from flask_sse_push.brokers.redis.cluster._scripts import keys
from tests.support.redis_helpers import SSEClient, pump
from tests.support.servers import gunicorn

if t.TYPE_CHECKING:
    from tests.support.cluster_helpers import RedisCluster
    from tests.support.redis_helpers import Event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.redis_app:create_app()"


class Load:
    """Publishes ``channel/n`` on each channel in turn from a thread, through the outage."""

    def __init__(self, url: str, key_prefix: str, channels: list[str]) -> None:
        self.publisher = Publisher(url, prefix=key_prefix)
        self.channels = channels
        self.acknowledged: list[tuple[float, str, str]] = []
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            channel = self.channels[n % len(self.channels)]
            data = f"{channel}/{n}"
            try:
                self.publisher.publish(data, channel=channel)
            except BrokerError:
                self.failures += 1
                time.sleep(0.02)
                continue
            self.acknowledged.append((time.monotonic(), channel, data))
            n += 1
            time.sleep(0.005)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.publisher.close()


def check_no_silent_gap(
    events: list[Event], channels: list[str], truth: dict[str, list[str]]
) -> int:
    """Each channel's events come in stream order, once; a skipped one has a reset before it.

    ``truth`` is what the streams hold after the failover. Events a dead
    master announced but lost are not in it, and may have been seen live.
    Returns how many resets the client got.
    """
    position = dict.fromkeys(channels, -1)
    reset_since = dict.fromkeys(channels, False)
    resets = 0
    for event in events:
        if event.event == "reset":
            resets += 1
            reset_since = dict.fromkeys(channels, True)
            continue
        channel = event.data.split("/")[0]
        if event.data not in truth[channel]:
            continue  # lost by the dead master after it was announced
        index = truth[channel].index(event.data)
        assert index > position[channel], f"{event.data} repeated or out of order"
        if position[channel] >= 0 and index != position[channel] + 1:
            assert reset_since[channel], f"silent gap before {event.data}"
        position[channel] = index
        reset_since[channel] = False
    return resets


def test_killing_a_master_under_load_loses_nothing_silently(
    failover_cluster: RedisCluster,
) -> None:
    cluster = failover_cluster
    key_prefix = f"fo{uuid.uuid4().hex[:6]}:"
    owners: dict[int, list[str]] = {}
    for n in range(40):
        name = f"f{n}"
        owners.setdefault(cluster.owner_port(keys(key_prefix, name)[2]), []).append(name)
    victim_port, doomed = next(iter(owners.items()))
    survivor = next(names for port, names in owners.items() if port != victim_port)
    plans = [[doomed[0]]] * 10 + [[doomed[0], survivor[0]]] * 10
    channels = [doomed[0], survivor[0]]
    env = {
        "SSE_PUSH_BROKER_URL": cluster.url,
        "SSE_PUSH_REDIS_PREFIX": key_prefix,
        "SSE_PUSH_KEEPALIVE": "0.3",
    }
    with gunicorn(APP, env=env, workers=2) as site:
        clients = [
            SSEClient(site.port, "/events?" + "&".join(f"channel={c}" for c in p)) for p in plans
        ]

        def reconnect_later(client: SSEClient) -> None:
            time.sleep(0.05)
            client.reconnect()

        try:
            pump(clients, lambda: all(c.status is not None for c in clients), what="headers")
            with Load(cluster.url, key_prefix, channels) as load:
                pump(clients, lambda: len(load.acknowledged) >= 100, 20, "load", reconnect_later)
                killed = time.monotonic()
                cluster.kill(victim_port)
                promoted_port = 0

                def promoted() -> bool:
                    nonlocal promoted_port
                    try:
                        promoted_port = cluster.owner_port(keys(key_prefix, doomed[0])[2])
                    except Exception:
                        return False
                    return promoted_port != victim_port

                pump(clients, promoted, 30, "a replica's promotion", reconnect_later)
                promotion = time.monotonic() - killed

                def published_after_kill() -> bool:
                    return any(
                        at > killed and ch == doomed[0] for at, ch, _ in load.acknowledged[-50:]
                    )

                pump(clients, published_after_kill, 30, "a publish after the kill", reconnect_later)
                first_publish = min(
                    at for at, ch, _ in load.acknowledged if at > killed and ch == doomed[0]
                )

                def live_again() -> bool:
                    fresh = {
                        d for at, ch, d in load.acknowledged if at > killed and ch == doomed[0]
                    }
                    return all(any(e.data in fresh for e in c.events) for c in clients)

                pump(clients, live_again, 30, "live events after the failover", reconnect_later)
                delivered = time.monotonic() - killed
                pump(clients, lambda: len(load.acknowledged) >= 400, 30, "load", reconnect_later)
            last = {
                ch: next(d for _, c, d in reversed(load.acknowledged) if c == ch) for ch in channels
            }
            # Every client gets the last event of each of its channels.
            pump(
                clients,
                lambda: all(
                    any(e.data == last[ch] for e in c.events)
                    for c, p in zip(clients, plans, strict=True)
                    for ch in p
                ),
                30,
                "every client catching up",
                reconnect_later,
            )
            node = cluster.node(promoted_port)
            truth = {
                ch: [fields["data"] for _, fields in node.xrange(keys(key_prefix, ch)[0])]
                for ch in channels
                if cluster.owner_port(keys(key_prefix, ch)[2]) == promoted_port
            }
            node.close()
            other = cluster.node(cluster.owner_port(keys(key_prefix, survivor[0])[2]))
            truth[survivor[0]] = [
                f["data"] for _, f in other.xrange(keys(key_prefix, survivor[0])[0])
            ]
            other.close()
            acknowledged = {ch: [d for _, c, d in load.acknowledged if c == ch] for ch in channels}
            lost = [d for d in acknowledged[doomed[0]] if d not in truth[doomed[0]]]
            resets = [
                check_no_silent_gap(c.events, p, truth) for c, p in zip(clients, plans, strict=True)
            ]
        finally:
            for client in clients:
                client.close()
    print(
        json.dumps(
            {
                "promotion_s": round(promotion, 2),
                "first_publish_after_kill_s": round(first_publish - killed, 2),
                "every_client_live_again_s": round(delivered, 2),
                "publish_failures": load.failures,
                "acknowledged_then_lost": len(lost),
                "clients_with_reset": sum(1 for r in resets if r),
                "reconnects": sum(c.connections - 1 for c in clients),
            }
        )
    )
    assert truth[doomed[0]][-1] == last[doomed[0]]
