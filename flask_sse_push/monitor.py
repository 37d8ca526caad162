"""The watcher of one app's live streams, owned by its :class:`~flask_sse_push.runtime.Runtime`.

It is a daemon thread (a greenlet under gevent), started when the runtime learns
which server it runs in, never by a stream. Every tick, at most
:data:`MAX_TICK` seconds apart (the send timeout's quarter, if shorter), it

- ends every stream once the server starts to stop (the server module wakes it
  at once from a chained signal handler where it can);
- releases streams whose client closed the connection, seen through one
  ``epoll`` set every :data:`HANGUP_TICK` seconds (or the server's own check);
- releases streams whose socket has an error (reset, ``TCP_USER_TIMEOUT``);
- cuts connections whose current write has made no progress for the send timeout.

It holds its runtime weakly, and stops once the runtime is gone.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
import weakref

if t.TYPE_CHECKING:
    from .runtime import Runtime

#: Time between two looks for clients that closed their connection, in
#: seconds: one ``epoll_wait`` each, however many streams there are.
HANGUP_TICK = 0.25

#: Longest time between two full sweeps (errors, silent peers, stuck writes).
MAX_TICK = 1.0

logger = logging.getLogger("flask_sse_push")


class Monitor:
    """Watches the registry of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = weakref.ref(runtime)
        self.wake = threading.Event()
        self.stopping = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (once)."""
        if self.thread is None:
            self.thread = threading.Thread(
                target=self.run, name="flask_sse_push-monitor", daemon=True
            )
            self.thread.start()

    def request_shutdown(self) -> None:
        """Start ending every stream; safe to call from a signal handler."""
        self.stopping = True
        self.wake.set()

    def run(self) -> None:
        swept = time.monotonic()
        while True:
            runtime = self._runtime()
            if runtime is None:
                return
            tick = max(0.05, min(MAX_TICK, runtime.registry.send_timeout / 4))
            del runtime  # hold it only while checking
            self.wake.wait(min(tick, HANGUP_TICK))
            self.wake.clear()
            runtime = self._runtime()
            if runtime is None:
                return
            now = time.monotonic()
            full = now - swept >= tick or self.stopping
            if full:
                swept = now
            try:
                self.check(runtime, full=full)
            except Exception:  # keep watching; one bad check must not stop the others
                logger.exception("The stream monitor failed a check; it keeps running.")
            del runtime

    def check(self, runtime: Runtime, *, full: bool = True) -> None:
        server = runtime.server
        if server.stopping():
            self.stopping = True
        registry = runtime.registry
        if self.stopping:
            registry.shut_down()
        if not len(registry):
            return
        registry.release_hangups()
        if full:
            registry.sweep(time.monotonic(), server)
