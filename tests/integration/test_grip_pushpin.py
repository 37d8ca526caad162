"""GRIP mode through a real Pushpin (and zurl), with the app under gunicorn's
sync worker on a real Redis: fan-out, resume, gaps, a proxy restart, forgery.

Every test counts what each client got against what was published: nothing
lost, nothing twice, in order.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing as t
from functools import partial

import httpx
import jwt
import pytest

from flask_sse_push import Publisher, ServerSentEvent
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.stream import STOP_ID
from tests.support.pushpin import Pushpin, start_grip_app
from tests.support.redis_helpers import SSEClient, pump
from tests.support.servers import RedisServer, free_port, stop

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import Gunicorn

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "grip-test-key-that-is-32-bytes-long!"


class Deployment(t.NamedTuple):
    redis: RedisServer
    pushpin: Pushpin
    app: Gunicorn

    def publish(self, data: str, channel: str = "default") -> str:
        response = httpx.post(
            f"{self.app.url}/publish", data={"data": data, "channel": channel}, timeout=30
        )
        response.raise_for_status()
        return response.text

    def client(self, query: str = "channel=default", last_event_id: str | None = None) -> SSEClient:
        return SSEClient(self.pushpin.port, f"/events?{query}", last_event_id=last_event_id)


@contextlib.contextmanager
def deploy(**settings: str) -> Iterator[Deployment]:
    """Redis, Pushpin, and the app under two gunicorn sync workers, with
    ``settings`` added to the app's environment."""
    with RedisServer() as redis:
        port = free_port()
        pushpin = Pushpin(port, KEY)
        with pushpin:
            app = start_grip_app(pushpin, redis.url, settings)
            try:
                yield Deployment(redis, pushpin, app)
            finally:
                stop(app.process)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    with deploy() as running:
        yield running


def data_of(client: SSEClient) -> list[str]:
    return [event.data for event in client.events if event.event == "message"]


def assert_exactly(clients: list[SSEClient], expected: list[str]) -> None:
    for client in clients:
        assert data_of(client) == expected, f"client got {len(data_of(client))} of {len(expected)}"


def publish_concurrently(deployment: Deployment, names: list[list[str]], channel: str) -> None:
    """Publish each list from its own thread, so both sync workers publish at once."""

    def run(batch: list[str]) -> None:
        for name in batch:
            deployment.publish(name, channel)

    threads = [threading.Thread(target=run, args=(batch,)) for batch in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


#: How a held stream's body starts: Pushpin relays it once the hold is set up.
HELD = b"retry: 100\n: keepalive "


def wait_held(clients: list[SSEClient], what: str) -> None:
    """Wait until every client has its status and the start of its body: the status
    alone may arrive before the body, and before Pushpin holds the stream."""
    pump(
        clients,
        lambda: all(c.status == 200 and len(c.body) >= len(HELD) for c in clients),
        what=what,
    )


def test_fan_out_through_pushpin(deployment: Deployment) -> None:
    clients = [deployment.client() for _ in range(40)]
    wait_held(clients, "40 held streams")
    assert all(c.body.startswith(HELD) for c in clients)
    batches = [[f"p{p}-{n}" for n in range(100)] for p in range(2)]
    publish_concurrently(deployment, batches, "default")
    total = sum(len(batch) for batch in batches)
    pump(clients, lambda: all(len(c.events) >= total for c in clients), timeout=60, what="fan-out")
    # Each client: every event once, in the broker's id order (the publishers
    # interleave, so the ids, not the names, give the order).
    broker = RedisBroker.from_url(deployment.redis.url)
    entries = broker.read(["default"], firsts={"default": (0, 0)}).entries["default"]
    broker.close()
    expected = [entry.event.data for entry in entries]
    assert sorted(expected) == sorted(name for batch in batches for name in batch)
    assert_exactly(clients, expected)
    assert {len(c.events) for c in clients} == {total}  # 40 x 200 deliveries
    for client in clients:
        client.close()


def test_resume_after_missed_events(deployment: Deployment) -> None:
    first = deployment.publish("before")
    client = deployment.client(last_event_id=first)
    stay = deployment.client()
    pump([client, stay], lambda: client.status == 200 and stay.status == 200, what="streams")
    for n in range(10):
        deployment.publish(f"seen-{n}")
    pump([client, stay], lambda: len(client.events) == 10 and len(stay.events) == 10)
    client.close()
    missed = [deployment.publish(f"missed-{n}") for n in range(25)]
    client.reconnect()  # with the last id it got, as EventSource does
    for n in range(10):
        deployment.publish(f"live-{n}")
    expected = [f"seen-{n}" for n in range(10)]
    expected += [f"missed-{n}" for n in range(25)] + [f"live-{n}" for n in range(10)]
    pump([client, stay], lambda: len(client.events) >= 45 and len(stay.events) >= 45)
    assert data_of(client) == expected
    assert data_of(stay) == expected
    assert client.last_event_id is not None and client.last_event_id > missed[-1]
    client.close()
    stay.close()


def test_lost_item_is_filled_from_the_next_link(deployment: Deployment) -> None:
    clients = [deployment.client("channel=a&channel=b") for _ in range(5)]
    wait_held(clients, "streams")
    broker = RedisBroker.from_url(deployment.redis.url)
    deployment.publish("a1", "a")
    broker.publish("a", ServerSentEvent("a2-never-sent-to-the-proxy"))
    deployment.publish("b1", "b")
    deployment.publish("a3", "a")
    pump(clients, lambda: all(len(c.events) >= 4 for c in clients), what="gap filled")
    # The stream's one proxy channel chains the set in the broker's id order,
    # so the recovered a2 still comes before b1.
    assert_exactly(clients, ["a1", "a2-never-sent-to-the-proxy", "b1", "a3"])
    broker.close()
    for client in clients:
        client.close()


def union_order(deployment: Deployment, channels: list[str]) -> list[str]:
    broker = RedisBroker.from_url(deployment.redis.url)
    snapshot = broker.read(channels, firsts=dict.fromkeys(channels, (0, 0)))
    broker.close()
    return [entry.event.data for entry in snapshot.after((0, 0), channels)]


def test_multi_channel_fan_out_and_resume(deployment: Deployment) -> None:
    clients = [deployment.client("channel=a&channel=b") for _ in range(20)]
    wait_held(clients, "20 held streams")
    publish_concurrently(deployment, [[f"a{n}" for n in range(60)]], "a")
    batches = [[f"a{n}" for n in range(60, 120)], [f"b{n}" for n in range(60)]]
    threads = [
        threading.Thread(target=publish_concurrently, args=(deployment, [batch], channel))
        for batch, channel in zip(batches, ["a", "b"], strict=True)
    ]
    for thread in threads:
        thread.start()
    leaver = clients[0]
    pump(clients, lambda: len(leaver.events) >= 80, timeout=60, what="80 events")
    leaver.close()
    for thread in threads:
        thread.join(120)
    expected = union_order(deployment, ["a", "b"])
    assert len(expected) == 180
    others = clients[1:]
    pump(others, lambda: all(len(c.events) >= 180 for c in others), timeout=60, what="fan-out")
    assert_exactly(others, expected)  # 19 x 180 deliveries, in the broker's order
    leaver.reconnect()  # resumes from wherever it left, in the middle of the races
    pump([leaver], lambda: len(leaver.events) >= 180, timeout=30, what="resume")
    assert data_of(leaver) == expected
    for client in clients:
        client.close()


def test_proxy_restart(deployment: Deployment) -> None:
    clients = [deployment.client() for _ in range(10)]
    wait_held(clients, "streams")
    before = [f"before-{n}" for n in range(5)]
    for name in before:
        deployment.publish(name)
    pump(clients, lambda: all(len(c.events) == 5 for c in clients))
    deployment.pushpin.stop()
    pump(clients, lambda: all(c.ended for c in clients), what="streams ended by the stop")
    during = [f"during-{n}" for n in range(5)]
    for name in during:  # the proxy is down: the broker has them, the POSTs fail
        deployment.publish(name)
    deployment.pushpin.start()
    for client in clients:
        client.reconnect()
    after = [f"after-{n}" for n in range(5)]
    wait_held(clients, "streams again")
    for name in after:
        deployment.publish(name)
    pump(clients, lambda: all(len(c.events) >= 15 for c in clients), what="resume")
    assert_exactly(clients, before + during + after)
    for client in clients:
        client.close()


def test_revoke_ends_the_held_streams_for_good(deployment: Deployment) -> None:
    clients = [deployment.client("channel=orders") for _ in range(5)]
    others = [deployment.client("channel=other") for _ in range(2)]
    wait_held(clients + others, "held streams")
    deployment.publish("o1", "orders")
    pump(clients, lambda: all(len(c.events) == 1 for c in clients))
    httpx.post(f"{deployment.app.url}/revoke", data={"channel": "orders"}, timeout=10)
    pump(clients, lambda: all(c.ended for c in clients), what="revoked streams closed")
    assert {c.last_event_id for c in clients} == {STOP_ID}
    for client in clients:
        client.reconnect()  # EventSource's one reconnect, with the stop id
    pump(clients, lambda: all(c.status is not None for c in clients))
    assert {c.status for c in clients} == {204}
    deployment.publish("x1", "other")  # streams of other channels stay
    pump(others, lambda: all(len(c.events) == 1 for c in others))
    assert not any(c.ended for c in others)
    for client in clients + others:
        client.close()


def test_revoke_by_identity_ends_only_that_identitys_held_streams(
    deployment: Deployment,
) -> None:
    alice = [deployment.client(f"channel={name}&user=alice") for name in ("a", "b", "a&channel=b")]
    alice_b = deployment.client("channel=b&user=alice")
    bob = [deployment.client(f"channel={name}&user=bob") for name in ("a", "b")]
    anonymous = deployment.client("channel=a")
    everyone = [*alice, alice_b, *bob, anonymous]
    wait_held(everyone, "held streams")
    # One identity on one channel: alice's streams of a end, her stream of b only stays.
    httpx.post(f"{deployment.app.url}/revoke", data={"channel": "a", "user": "alice"}, timeout=10)
    ended_a = [alice[0], alice[2]]
    pump(everyone, lambda: all(c.ended for c in ended_a), what="alice's streams of a closed")
    # Then the identity everywhere.
    httpx.post(f"{deployment.app.url}/revoke", data={"user": "alice"}, timeout=10)
    pump(everyone, lambda: alice[1].ended and alice_b.ended, what="alice's other streams closed")
    assert {c.last_event_id for c in [*alice, alice_b]} == {STOP_ID}
    for client in [*alice, alice_b]:
        client.reconnect()  # EventSource's one reconnect, with the stop id
    pump([*alice, alice_b], lambda: all(c.status is not None for c in [*alice, alice_b]))
    assert {c.status for c in [*alice, alice_b]} == {204}
    # Bob's and the anonymous streams stay, and get what is published.
    deployment.publish("a1", "a")
    deployment.publish("b1", "b")
    others = [*bob, anonymous]
    pump(others, lambda: all(len(c.events) == 1 for c in others))
    assert [data_of(c) for c in others] == [["a1"], ["b1"], ["a1"]]
    assert not any(c.ended for c in others)
    for client in everyone:
        client.close()


def paused(clients: list[SSEClient], until: float) -> bool:
    return time.monotonic() > until or all(c.ended for c in clients)


def test_held_stream_ends_at_its_lifetime_and_resumes() -> None:
    with deploy(SSE_PUSH_MAX_LIFETIME="2") as deployment:
        clients = [deployment.client("channel=life"), deployment.client("channel=life&channel=x")]
        wait_held(clients, "held streams")
        opened = time.monotonic()
        # Events keep flowing while the lifetime runs out: a busy stream ends too.
        published: list[str] = []
        while not all(c.ended for c in clients) and time.monotonic() - opened < 20:
            published.append(f"e{len(published)}")
            deployment.publish(published[-1], "life")
            pump(clients, partial(paused, clients, time.monotonic() + 0.2))
        lived = time.monotonic() - opened
        assert all(c.ended for c in clients), f"held streams still open after {lived:.1f} s"
        for client in clients:
            assert b"retry: 100\n" in client.body.rpartition(b": closed: lifetime")[2]
            assert client.last_event_id is not None
        missed = [f"m{n}" for n in range(5)]
        for name in missed:
            deployment.publish(name, "life")
        for client in clients:
            client.reconnect()  # with its last id, as EventSource does
        wait_held(clients, "held streams")
        deployment.publish("after", "life")
        expected = published + missed + ["after"]
        pump(clients, lambda: all(len(c.events) >= len(expected) for c in clients))
        assert_exactly(clients, expected)
        for client in clients:
            client.close()


def test_publisher_outside_the_app(deployment: Deployment) -> None:
    clients = [deployment.client("channel=jobs") for _ in range(3)]
    wait_held(clients, "held streams")
    with Publisher(deployment.redis.url, grip_url=deployment.pushpin.publish_url) as publisher:
        ids = [publisher.publish({"job": n}, channel="jobs") for n in range(5)]
    pump(clients, lambda: all(len(c.events) >= 5 for c in clients))
    for client in clients:
        assert [e.data for e in client.events] == [f'{{"job": {n}}}' for n in range(5)]
        assert [e.id for e in client.events] == ids
        client.close()


def test_request_without_grip_sig_is_refused(deployment: Deployment) -> None:
    direct = httpx.get(f"{deployment.app.url}/events?channel=default", timeout=10)
    assert direct.status_code == 403
    forged_sig = jwt.encode({"iss": "pushpin", "exp": 2**31}, "guess" * 8, algorithm="HS256")
    forged = httpx.get(
        f"{deployment.app.url}/events?channel=default",
        headers={"Grip-Sig": forged_sig},
        timeout=10,
    )
    assert forged.status_code == 403
    assert "grip-hold" not in forged.headers
    link = httpx.get(
        f"{deployment.app.url}/events/grip/next?token=x",
        headers={"Grip-Sig": forged_sig, "Grip-Last": "sse:default; last-id=0-0"},
        timeout=10,
    )
    assert link.status_code == 403
