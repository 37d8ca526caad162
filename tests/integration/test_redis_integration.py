"""Real redis-server, real ``gunicorn -k gevent`` workers, raw-socket clients."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import typing as t
import uuid

import pytest

from flask_sse_push import BrokerError, Publisher
from flask_sse_push.brokers.redis import SUBSCRIBER_NAME, RedisBroker
from flask_sse_push.control import CONTROL_CHANNEL
from tests.support.redis_helpers import (
    Inspector,
    SSEClient,
    open_fds,
    pump,
    redis_client,
    sse_clients,
    stream_ids,
    take,
    wait_until,
)
from tests.support.servers import ROOT, Gunicorn, RedisServer, gunicorn

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.redis_app:create_app()"


def app_env(server: RedisServer, key_prefix: str) -> dict[str, str]:
    return {
        "SSE_PUSH_BROKER_URL": server.url,
        "SSE_PUSH_REDIS_PREFIX": key_prefix,
        "SSE_PUSH_KEEPALIVE": "0.3",
    }


class Site(t.NamedTuple):
    """A gunicorn with two workers, shared by the tests that only add clients."""

    server: Gunicorn
    redis: RedisServer
    prefix: str


@pytest.fixture(scope="module")
def site(redis_server: RedisServer) -> Iterator[Site]:
    # --preload builds the app, and its broker, in the master before the fork.
    key_prefix = f"site{uuid.uuid4().hex[:6]}:"
    with gunicorn(
        APP, env=app_env(redis_server, key_prefix), workers=2, extra_args=("--preload",)
    ) as server:
        yield Site(server, redis_server, key_prefix)


def connect(port: int, count: int, path: str) -> list[SSEClient]:
    """Open ``count`` streams and wait until each is subscribed (its headers came)."""
    clients = [SSEClient(port, path) for _ in range(count)]
    pump(clients, lambda: all(c.status is not None for c in clients), what="stream headers")
    assert {c.status for c in clients} == {200}
    return clients


def connect_to_both_workers(port: int, path: str, minimum: int) -> list[SSEClient]:
    """Open streams until both workers serve at least one, and ``minimum`` are open."""
    clients = connect(port, minimum, path)
    deadline = time.monotonic() + 20
    while len({c.worker for c in clients}) < 2:
        # The second worker may still be booting: give it time, then try again.
        assert time.monotonic() < deadline, "every stream landed on one worker"
        time.sleep(0.2)
        clients += connect(port, 5, path)
    return clients


def close_all(clients: list[SSEClient]) -> None:
    for client in clients:
        client.close()


def received_all(clients: list[SSEClient], data: str) -> t.Callable[[], bool]:
    return lambda: all(any(e.data == data for e in c.events) for c in clients)


def reconnect_later(client: SSEClient) -> None:
    """What EventSource does at the end of a stream (with a short retry)."""
    time.sleep(0.05)
    client.reconnect()


class Flow:
    """Publishes numbered events from a thread, retrying through outages."""

    def __init__(self, url: str, key_prefix: str, channel: str, count: int) -> None:
        self.publisher = Publisher(url, prefix=key_prefix)
        self.channel = channel
        self.count = count
        self.sent = 0
        self.failures = 0
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while self.sent < self.count and time.monotonic() < deadline:
            try:
                self.publisher.publish(str(self.sent), channel=self.channel)
            except BrokerError:
                self.failures += 1
                time.sleep(0.05)
                continue
            self.sent += 1
            time.sleep(0.01)

    def __enter__(self) -> Flow:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(40)
        self.publisher.close()

    def finish(self) -> None:
        """Wait for the numbered events, then publish the ``end`` marker."""
        self.thread.join(40)
        assert self.sent == self.count
        for _ in range(100):
            try:
                self.publisher.publish("end", channel=self.channel)
                return
            except BrokerError:
                time.sleep(0.1)
        pytest.fail("could not publish the end marker")


def test_publish_reaches_clients_of_every_worker(site: Site) -> None:
    """One publish, from outside the app, reaches streams on both workers."""
    clients = connect_to_both_workers(site.server.port, "/events?channel=fanout", 20)
    try:
        with Publisher(site.redis.url, prefix=site.prefix) as publisher:
            ids = [publisher.publish(f"m{n}", channel="fanout") for n in range(3)]
        pump(clients, received_all(clients, "m2"), what="the fan-out")
        for client in clients:
            assert client.ids() == ids
    finally:
        close_all(clients)


def test_redis_connections_grow_with_workers_not_clients(site: Site, inspector: Inspector) -> None:
    """200 streams on 2 workers use one subscriber connection per worker."""
    clients = connect_to_both_workers(site.server.port, "/events?channel=count", 200)
    try:
        connections = sse_clients(inspector)
        subscribers = [c for c in connections if c["name"] == SUBSCRIBER_NAME]
        assert len(subscribers) == 2
        assert len(connections) <= 2 + 2, connections
        with Publisher(site.redis.url, prefix=site.prefix) as publisher:
            publisher.publish("all of you", channel="count")
        pump(clients, received_all(clients, "all of you"), what="200 clients")
    finally:
        close_all(clients)


def test_churn_leaves_no_subscription_and_no_fd(site: Site, inspector: Inspector) -> None:
    """2,000 connect/disconnect cycles: no Redis subscription, no fd left behind."""
    port = site.server.port
    probes = connect_to_both_workers(port, "/events?channel=probe", 2)
    pids = {int(c.worker) for c in probes if c.worker}
    close_all(probes)

    def cycle(batch: int) -> None:
        clients = connect(port, 100, f"/events?channel=churn{batch % 20}&channel=shared")
        close_all(clients)

    def settled() -> bool:
        # Each worker's control channel stays subscribed for the worker's life.
        control = f"{site.prefix}channel:{CONTROL_CHANNEL}"
        return [
            c for c in inspector.pubsub_channels(f"{site.prefix}channel:*") if c != control
        ] == []

    for batch in range(2):  # warm up: lazily made objects exist from here on
        cycle(batch)
    wait_until(settled, what="the warm-up streams to end")
    before = {pid: open_fds(pid) for pid in pids}
    for batch in range(20):
        cycle(batch)
    wait_until(settled, what="every Redis subscription to go")
    wait_until(
        lambda: all(open_fds(pid) <= before[pid] + 3 for pid in pids),
        what=f"fd counts to return to {before}",
    )


def test_two_servers_sharing_redis_see_every_event(redis_server: RedisServer, prefix: str) -> None:
    """Two deployments ("hosts") on one Redis: a client of each sees every event."""
    env = app_env(redis_server, prefix)
    with gunicorn(APP, env=env) as one, gunicorn(APP, env=env) as two:
        clients = connect(one.port, 1, "/events?channel=hosts")
        clients += connect(two.port, 1, "/events?channel=hosts")
        try:
            with Publisher(redis_server.url, prefix=prefix) as publisher:
                ids = [publisher.publish(str(n), channel="hosts") for n in range(10)]
            pump(clients, received_all(clients, "9"), what="both hosts")
            assert clients[0].ids() == clients[1].ids() == ids
        finally:
            close_all(clients)


def test_streams_while_redis_is_down_get_200_and_retry(prefix: str) -> None:
    """Redis down: new streams get 200, retry: and an end; open ones keep their keepalives."""
    with RedisServer() as server, gunicorn(APP, env=app_env(server, prefix), workers=2) as site:
        open_streams = connect(site.port, 4, "/events?channel=outage")
        try:
            server.stop()
            # A stream opened before a worker notices is kept open (and caught
            # up later), so first wait for the workers to notice.
            wait_until(lambda: answers_retry(site.port), what="the outage to be noticed")
            sizes = [len(c.body) for c in open_streams]
            attempts = [SSEClient(site.port, "/events?channel=outage") for _ in range(20)]
            pump(attempts, lambda: all(c.ended for c in attempts), what="transient answers")
            for attempt in attempts:
                assert attempt.status == 200
                assert re.search(rb"(^|\n)retry: [0-9]+\n", attempt.body), attempt.body
            pump(
                open_streams,
                lambda: all(len(c.body) > n for c, n in zip(open_streams, sizes, strict=True)),
                what="keepalives during the outage",
            )
            assert not any(c.ended for c in open_streams)
            server.start()
            with Publisher(server.url, prefix=prefix) as publisher:
                wait_until(lambda: publishes(publisher, "back"), what="Redis to return")
            pump(open_streams, received_all(open_streams, "back"), what="the first event back")
        finally:
            close_all(open_streams)


def answers_retry(port: int) -> bool:
    """Whether a new stream ends at once (with ``retry:``) rather than staying open."""
    probe = SSEClient(port, "/events?channel=outage")
    deadline = time.monotonic() + 1.0
    try:
        pump([probe], lambda: probe.ended or time.monotonic() > deadline)
        return probe.ended
    finally:
        probe.close()


def publishes(publisher: Publisher, data: str) -> bool:
    try:
        publisher.publish(data, channel="outage")
    except BrokerError:
        return False
    return True


def test_redis_restart_while_events_flow_loses_nothing(prefix: str) -> None:
    """Kill redis-server (AOF on) mid-flow and restart it: every event arrives, once, in order."""
    with (
        RedisServer(persist=True) as server,
        gunicorn(APP, env=app_env(server, prefix), workers=2) as site,
    ):
        clients = connect_to_both_workers(site.port, "/events?channel=flow", 6)
        try:
            with Flow(server.url, prefix, "flow", 120) as flow:
                pump(clients, lambda: flow.sent >= 40, what="the first events")
                server.stop(signal.SIGKILL)
                time.sleep(0.5)
                server.start()
                flow.finish()
                pump(clients, received_all(clients, "end"), 30, "the end", reconnect_later)
            assert flow.failures > 0, "the outage did not interrupt publishing"
            check = redis_client(server)
            try:
                expected = stream_ids(check, prefix, "flow")
            finally:
                check.close()
            assert len(expected) >= 121
            # Redis kept everything (AOF), so nobody even needs a reset.
            for client in clients:
                assert client.ids() == expected
                assert [e.event for e in client.events if e.event != "message"] == []
        finally:
            close_all(clients)


def test_killed_worker_clients_resume_without_loss_or_repeats(
    redis_server: RedisServer, prefix: str, inspector: Inspector
) -> None:
    """SIGKILL a worker mid-stream; its clients reconnect with Last-Event-ID and miss nothing."""
    with gunicorn(APP, env=app_env(redis_server, prefix), workers=2) as site:
        clients = connect_to_both_workers(site.port, "/events?channel=resume", 6)
        assert clients[0].worker is not None
        victim = int(clients[0].worker)
        assert victim not in (0, os.getpid(), site.process.pid)
        try:
            with Flow(redis_server.url, prefix, "resume", 100) as flow:
                pump(clients, lambda: flow.sent >= 30, what="the first events")
                os.kill(victim, signal.SIGKILL)
                flow.finish()
                pump(clients, received_all(clients, "end"), 30, "the end", reconnect_later)
            expected = stream_ids(inspector, prefix, "resume")
            for client in clients:
                assert [e.event for e in client.events if e.event != "message"] == []
                assert client.ids() == expected
            assert clients[0].connections >= 2
        finally:
            close_all(clients)


def test_cli_publish_goes_through_the_apps_redis_broker(
    redis_server: RedisServer, prefix: str
) -> None:
    """``flask sse publish`` reaches subscribers of the app's Redis, with the given fields."""
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix)
    env = {**os.environ, **app_env(redis_server, prefix)}
    command = [sys.executable, "-m", "flask", "--app", "tests.apps.redis_app:create_app"]
    try:
        with broker.subscribe(["cli"]) as sub:
            given = subprocess.run(
                [*command, "sse", "publish", "--channel", "cli", "--event", "note", "--id", "n-1",
                 "hello"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert given.returncode == 0, given.stderr
            assert given.stdout.strip() == "n-1"
            assigned = subprocess.run(
                [*command, "sse", "publish", "--channel", "cli", "again"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert assigned.returncode == 0, assigned.stderr
            first, second = take(sub, 2)
        assert (first.data, first.event, first.id) == ("hello", "note", "n-1")
        assert (second.data, second.id) == ("again", assigned.stdout.strip())
    finally:
        broker.close()
