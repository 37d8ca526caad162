"""One gunicorn worker with many channels, and a redis-server restarted under it.

Shared by ``tests/integration/test_resubscribe.py`` and
``tests/integration/test_redis_cluster_resubscribe.py`` (which assert on the
outcome) and ``bench/resubscribe.py`` (which prints the figures for several
channel counts).

The worker serves ``tests/apps/load_app.py``: ``streams`` clients each subscribe to
``width`` channels of their own, so the worker's listener holds
``streams * width`` channels. Each stream gets one event, then redis-server is
restarted without persistence: every client's window is gone, so each must get a
``reset``, and then the event published to its last channel after the restart.
Meanwhile a thread asks ``/events/health`` every 50 ms; the worker's own ticker
(``/stall``) gives the longest time its event loop was kept from running.

With ``cluster=True`` the worker uses the Redis Cluster broker on 3 masters
(the channels spread over all of them), and the change is ``restart``: every
master is killed and started again without persistence, so every shard's
connection breaks and every channel is resubscribed and every client reset; or
``failover``: one master is ``kill -9``-ed and its replica promoted, so the
channels of that shard (about a third) are resubscribed on the new master and
their clients caught up from the replicated streams.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
import typing as t
import urllib.request
import uuid

from redis.crc import key_slot

from flask_sse_push import Publisher
from flask_sse_push.brokers.redis.cluster._scripts import keys
from tests.support.cluster_helpers import RedisCluster
from tests.support.redis_helpers import SSEClient, pump
from tests.support.servers import RedisServer, start_gunicorn, stop

APP = "tests.apps.load_app:create_app()"


@dataclasses.dataclass
class Figures:
    """What one restart cost the worker."""

    channels: int
    #: The topology change (``restart`` or, on a cluster, ``failover``).
    change: str = "restart"
    #: Seconds from Redis serving again (a cluster: ``cluster_state:ok`` after a
    #: restart, a replica promoted after a failover) to every client having its
    #: reset (a failover: the event published to a moved channel after it).
    recovery: float = 0.0
    #: The longest stall of the worker's event loop during the restart, in seconds:
    #: wall time, and the CPU time the loop's thread spent in it (a busy machine
    #: that does not run the worker lengthens the first, not the second).
    longest_stall: float = 0.0
    longest_stall_cpu: float = 0.0
    #: The longest garbage collection among them (CPU seconds).
    longest_gc: float = 0.0
    #: The slowest ``/events/health`` answer during the restart, in seconds.
    slowest_health: float = 0.0
    #: Health checks that failed (no answer within 5 s, or an error).
    failed_health: int = 0
    #: Seconds gunicorn took to exit after SIGTERM.
    sigterm: float = 0.0
    #: Clients that got a ``reset`` / the event published after the restart.
    resets: int = 0
    arrived: int = 0
    #: Clients that were expected to get a reset (all of them but after a
    #: failover, whose promoted replica keeps the streams).
    expected_resets: int = 0
    #: Reconnects the worker's log reports beyond the first (a resubscribe given up).
    notes: list[str] = dataclasses.field(default_factory=list)


def assert_responsive(figures: Figures, streams: int, stall_bound: float) -> None:
    """What a resubscribe of every channel must leave: each stream got its ``reset``
    and then the next event, the worker's event loop never ran longer than
    ``stall_bound`` CPU seconds without its ticker, and every health check answered."""
    assert figures.resets == streams, figures
    assert figures.arrived == streams, figures
    assert figures.longest_stall_cpu < stall_bound, figures
    assert figures.failed_health == 0, figures
    # Wall time: the machine may be busy, but a frozen worker misses by far more.
    assert figures.slowest_health < 5.0, figures
    assert figures.sigterm < 10.0, figures
    assert figures.notes == [], figures


def _get(url: str, timeout: float = 5.0) -> t.Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class _HealthProbe:
    """Asks ``/events/health`` every 50 ms and keeps the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slowest = 0.0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _HealthProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            started = time.monotonic()
            try:
                urllib.request.urlopen(self.url, timeout=5.0).close()
            except urllib.error.HTTPError:
                pass  # 503 while Redis is down is an answer
            except OSError:
                self.failed += 1
            self.slowest = max(self.slowest, time.monotonic() - started)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class _Backend:
    """The Redis under the worker: one redis-server, or a Redis Cluster; and how it changes."""

    def __init__(self, cluster: bool, change: str) -> None:
        if change not in ("restart", "failover") or (change == "failover" and not cluster):
            raise ValueError(f"no change {change!r} for cluster={cluster}")
        self.change = change
        self.single: RedisServer | None = None
        self.cluster: RedisCluster | None = None
        self.changed: list[str] = []  # the channels whose shard changed (cluster)
        if cluster:
            self.cluster = RedisCluster(masters=3, replicas=1 if change == "failover" else 0)
            self.cluster.start()
            self.url = self.cluster.url
        else:
            self.single = RedisServer()
            self.single.start()
            self.url = self.single.url

        self.victim = 0  # the master a failover kills
        if cluster and change == "failover":
            assert self.cluster is not None
            self.victim = self.cluster.master_ports()[0]

    def on_victim(self, prefix: str) -> t.Callable[[str], bool]:
        """Whether a channel lives on the shard the change breaks (all, for a restart)."""
        if self.cluster is None or self.change == "restart":
            return lambda channel: True
        ranges = [(r[0], r[1]) for r in self.cluster.slots() if int(r[2][1]) == self.victim]

        def served(channel: str) -> bool:
            slot = key_slot(_pubsub_key(prefix, channel).encode())
            return any(start <= slot <= end for start, end in ranges)

        return served

    def apply(self) -> None:
        """Make the change; return once Redis serves again."""
        if self.single is not None:
            self.single.stop()
            self.single.start()
            return
        assert self.cluster is not None
        cluster = self.cluster
        if self.change == "restart":
            ports = list(cluster.processes)
            for port in ports:
                cluster.kill(port)
            for port in ports:
                cluster.start_node(port)
            cluster.wait_ok(timeout=60)
            return
        cluster.kill(self.victim)
        deadline = time.monotonic() + 60
        while len(cluster.master_ports()) < 3:
            if time.monotonic() > deadline:
                raise AssertionError("no replica was promoted within 60 s")
            time.sleep(0.05)

    def close(self) -> None:
        if self.single is not None:
            self.single.__exit__(None, None, None)
        if self.cluster is not None:
            self.cluster.stop()


def _pubsub_key(prefix: str, channel: str) -> str:
    return keys(prefix, channel)[2]


def run(
    streams: int,
    width: int,
    *,
    sigterm_during: bool = False,
    timeout: float = 120.0,
    cluster: bool = False,
    change: str = "restart",
) -> Figures:
    """Change the Redis under a worker holding ``streams * width`` channels.

    ``cluster`` selects the Redis Cluster broker; ``change`` is ``restart``
    (every server, without persistence) or ``failover`` (cluster only: one
    master killed, its replica promoted).
    """
    figures = Figures(channels=streams * width, change=change)
    prefix = f"resub{uuid.uuid4().hex[:8]}:"
    backend = _Backend(cluster, change)
    redis_url = backend.url
    try:
        server = start_gunicorn(
            APP,
            env={"SSE_PUSH_BROKER_URL": redis_url, "SSE_PUSH_REDIS_PREFIX": prefix},
            extra_args=("--graceful-timeout", "30"),
        )
    except BaseException:
        backend.close()
        raise
    clients: list[SSEClient] = []
    try:
        for block in range(streams):
            clients.append(SSEClient(server.port, f"/events?block={block}&width={width}"))
            if len(clients) % 20 == 0:
                pump(clients, lambda: all(c.status is not None for c in clients), timeout)
        pump(clients, lambda: all(c.status is not None for c in clients), timeout)
        bad = [c.status for c in clients if c.status != 200]
        if bad:
            raise AssertionError(f"streams answered {bad[:5]}")
        with Publisher(redis_url, prefix=prefix) as publisher:
            for block in range(streams):
                publisher.publish("before", channel=f"b{block}-0")
        pump(clients, lambda: all(c.ids() for c in clients), timeout, "the first events")

        def got(client: SSEClient, event: str, data: str | None = None) -> bool:
            return any(e.event == event and data in (None, e.data) for e in client.events)

        _get(f"{server.url}/stall?reset=1")
        with _HealthProbe(f"{server.url}/events/health") as probe:
            # Each client's last event comes on a channel the change broke.
            served = backend.on_victim(prefix)
            lasts = [
                next(f"b{b}-{i}" for i in reversed(range(width)) if served(f"b{b}-{i}"))
                for b in range(streams)
            ]
            backend.apply()
            back = time.monotonic()
            # Every window is gone after a restart without persistence; after a
            # failover the promoted replica kept the streams: no reset is due.
            expect_reset = clients if change == "restart" else []
            figures.expected_resets = len(expect_reset)
            if sigterm_during:
                # The worker reconnects within a few tenths of a second, and then
                # resubscribes for about as long again, or (resubscribing unbatched) froze.
                time.sleep(1.0)
                started = time.monotonic()
                stop(server.process, signal.SIGTERM, timeout=60)
                figures.sigterm = time.monotonic() - started
                return figures
            try:
                pump(
                    clients,
                    lambda: all(got(c, "reset") for c in expect_reset),
                    timeout,
                    "every client's reset",
                )
            finally:
                figures.recovery = time.monotonic() - back
                figures.resets = sum(got(c, "reset") for c in clients)
            # After a failover, recovery ends when the events published now (on the
            # moved channels) arrive: caught up from the stream or live.
            with Publisher(redis_url, prefix=prefix) as publisher:
                for block in range(streams):
                    publisher.publish("after", channel=lasts[block])
            try:
                pump(
                    clients,
                    lambda: all(got(c, "message", "after") for c in clients),
                    timeout,
                    "the events published after the restart",
                )
            finally:
                figures.arrived = sum(got(c, "message", "after") for c in clients)
                if change == "failover":
                    figures.recovery = time.monotonic() - back
            time.sleep(0.3)  # a few more ticks after the work
        figures.slowest_health = probe.slowest
        figures.failed_health = probe.failed
        stall = _get(f"{server.url}/stall")
        figures.longest_stall, figures.longest_stall_cpu = stall["longest"], stall["longest_cpu"]
        figures.longest_gc = stall["longest_gc"]
        started = time.monotonic()
        stop(server.process, signal.SIGTERM, timeout=60)
        figures.sigterm = time.monotonic() - started
        return figures
    finally:
        for client in clients:
            client.close()
        stop(server.process)
        backend.close()
        figures.notes = [line for line in server.output().splitlines() if "Traceback" in line]
