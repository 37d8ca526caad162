"""One gunicorn worker with many channels, and a redis-server restarted under it.

Shared by ``tests/test_resubscribe.py`` (which asserts on the outcome) and
``bench/resubscribe.py`` (which prints the figures for several channel counts).

The worker serves ``tests/load_app.py``: ``streams`` clients each subscribe to
``width`` channels of their own, so the worker's listener holds
``streams * width`` channels. Each stream gets one event, then redis-server is
restarted without persistence: every client's window is gone, so each must get a
``reset``, and then the event published to its last channel after the restart.
Meanwhile a thread asks ``/events/health`` every 50 ms; the worker's own ticker
(``/stall``) gives the longest time its event loop was kept from running.
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

from flask_sse_push import Publisher
from tests.redis_helpers import SSEClient, pump
from tests.servers import RedisServer, start_gunicorn, stop

APP = "tests.load_app:create_app()"


@dataclasses.dataclass
class Figures:
    """What one restart cost the worker."""

    channels: int
    #: Seconds from redis-server accepting again to every client having its reset.
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
    #: Reconnects the worker's log reports beyond the first (a resubscribe given up).
    notes: list[str] = dataclasses.field(default_factory=list)


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


def run(
    streams: int, width: int, *, sigterm_during: bool = False, timeout: float = 120.0
) -> Figures:
    """Restart redis-server under a worker holding ``streams * width`` channels."""
    figures = Figures(channels=streams * width)
    prefix = f"resub{uuid.uuid4().hex[:8]}:"
    redis = RedisServer()
    redis.start()
    server = start_gunicorn(
        APP,
        env={"SSE_PUSH_BROKER_URL": redis.url, "SSE_PUSH_REDIS_PREFIX": prefix},
        extra_args=("--graceful-timeout", "30"),
    )
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
        with Publisher(redis.url, prefix=prefix) as publisher:
            for block in range(streams):
                publisher.publish("before", channel=f"b{block}-0")
        pump(clients, lambda: all(c.ids() for c in clients), timeout, "the first events")

        def got(client: SSEClient, event: str, data: str | None = None) -> bool:
            return any(e.event == event and data in (None, e.data) for e in client.events)

        _get(f"{server.url}/stall?reset=1")
        with _HealthProbe(f"{server.url}/events/health") as probe:
            redis.stop()
            redis.start()
            back = time.monotonic()
            if sigterm_during:
                # The worker reconnects within a few tenths of a second, and then
                # resubscribes for about as long again, or (before the fix) froze.
                time.sleep(1.0)
                started = time.monotonic()
                stop(server.process, signal.SIGTERM, timeout=60)
                figures.sigterm = time.monotonic() - started
                return figures
            try:
                pump(
                    clients,
                    lambda: all(got(c, "reset") for c in clients),
                    timeout,
                    "every client's reset",
                )
            finally:
                figures.recovery = time.monotonic() - back
                figures.resets = sum(got(c, "reset") for c in clients)
            with Publisher(redis.url, prefix=prefix) as publisher:
                for block in range(streams):
                    publisher.publish("after", channel=f"b{block}-{width - 1}")
            try:
                pump(
                    clients,
                    lambda: all(got(c, "message", "after") for c in clients),
                    timeout,
                    "the events published after the restart",
                )
            finally:
                figures.arrived = sum(got(c, "message", "after") for c in clients)
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
        redis.__exit__(None, None, None)
        figures.notes = [line for line in server.output().splitlines() if "Traceback" in line]
