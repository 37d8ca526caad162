"""One watcher per process over every :class:`~flask_sse_push.connections.StreamRegistry`.

It is a daemon thread, which gunicorn's gevent worker turns into a greenlet. It
starts with the first stream a process accepts, so it never runs in a master
process that forks workers, and stops when the last stream is gone. Each tick it

- ends every stream when the gunicorn worker stops (``worker.alive`` turns
  false; with the gevent worker a chained signal handler wakes it at once);
- ends streams whose socket has an error: the peer reset the connection, or the
  kernel gave up on it after ``TCP_USER_TIMEOUT``;
- cuts connections whose current write has taken longer than the send timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import typing as t
import weakref

from . import server

if t.TYPE_CHECKING:
    from .connections import StreamRegistry

#: Longest time between two checks, in seconds.
MAX_TICK = 1.0

logger = logging.getLogger("flask_sse_push")


class Monitor:
    """The watcher of one process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.registries: weakref.WeakSet[StreamRegistry] = weakref.WeakSet()
        self.wake = threading.Event()
        self.stopping = False
        self.worker: t.Any = None
        self.hooked = False
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def watch(self, registry: StreamRegistry) -> None:
        with self._lock:
            self.registries.add(registry)
            if not self.hooked:
                self.hooked = True
                self.worker = server.gunicorn_worker()
                if self.worker is not None:
                    server.chain_shutdown_handlers(self.request_shutdown)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self.run, name="flask_sse_push-monitor", daemon=True
                )
                self.thread.start()
        if self.stopping:
            registry.shut_down()

    def request_shutdown(self) -> None:
        """Start ending every stream; safe to call from a signal handler."""
        self.stopping = True
        self.wake.set()

    def tick(self) -> float:
        timeouts = [registry.send_timeout for registry in list(self.registries)]
        return max(0.05, min([MAX_TICK, *(timeout / 4 for timeout in timeouts)]))

    def run(self) -> None:
        while True:
            self.wake.wait(self.tick())
            self.wake.clear()
            try:
                self.check()
            except Exception:  # keep watching; one bad check must not stop the others
                logger.exception("The stream monitor failed a check; it keeps running.")
            with self._lock:
                # A stream is added to its registry before watch() takes this
                # lock, so none can slip in between this test and the exit.
                if not any(len(registry) for registry in list(self.registries)):
                    self.thread = None
                    return

    def check(self) -> None:
        worker = self.worker
        if worker is not None and not worker.alive:
            self.stopping = True
        registries = list(self.registries)
        if self.stopping:
            for registry in registries:
                registry.shut_down()
        now = time.monotonic()
        for registry in registries:
            registry.sweep(now)


_monitor: Monitor | None = None
_monitor_lock = threading.Lock()


def monitor() -> Monitor:
    """Return this process's monitor, making a new one after a fork."""
    global _monitor
    with _monitor_lock:
        if _monitor is None or _monitor.pid != os.getpid():
            _monitor = Monitor()
        return _monitor


def watch(registry: StreamRegistry) -> None:
    """Have this process's monitor watch ``registry`` (starting it if needed)."""
    monitor().watch(registry)
