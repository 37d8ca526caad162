"""The delivery runtime of one app: :class:`Runtime`, stored in ``app.extensions["sse_push"]``.

:meth:`SSEPush.init_app <flask_sse_push.SSEPush.init_app>` creates it. It owns
everything the app's streams share in this process: the broker, the settings
read from the config, the registry of live streams, their monitor, the metrics,
and the :class:`~flask_sse_push.servers.base.Server` the app runs in (which in
turn owns the fast path, where the server has one). Nothing of this lives in a
module global, so two apps in one process never share it, and a forked worker
starts the monitor for itself.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import typing as t

from .connections import StreamRegistry
from .monitor import Monitor
from .servers import detect, detect_process
from .servers.base import Server
from .servers.tcp import HangupWatch

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from flask import Flask

    from .brokers.base import Broker
    from .connections import LiveStream
    from .metrics import Metrics
    from .servers.base import FastWriter

logger = logging.getLogger("flask_sse_push")

#: The key of the runtime in ``app.extensions``.
EXTENSION_KEY = "sse_push"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The config keys the streams use, read once by ``init_app``."""

    keepalive: float
    retry: int | None
    send_timeout: float
    max_lifetime: float | None
    #: ``SSE_PUSH_MAX_CONNECTIONS``; ``None`` takes the server's capacity.
    max_connections: int | None
    direct_writes: bool
    #: ``SSE_PUSH_SERVER``: a server family of :data:`~flask_sse_push.servers.FAMILIES`.
    server: str = "detect"


@dataclasses.dataclass
class Hooks:
    """The callbacks an :class:`~flask_sse_push.SSEPush` object registered, shared by its apps."""

    authorizers: list[Callable[[str], bool]] = dataclasses.field(default_factory=list)
    identify: Callable[[], t.Any] | None = None


class Runtime:
    """What one app's streams share in this process.

    :param broker: the app's broker.
    :param settings: the config, as read by ``init_app``.
    :param hooks: the extension object's hooks.
    :param metrics: the counters :meth:`SSEPush.stats` reports.
    """

    def __init__(self, broker: Broker, settings: Settings, hooks: Hooks, metrics: Metrics) -> None:
        self.broker = broker
        self.settings = settings
        self.hooks = hooks
        self.metrics = metrics
        self.registry = StreamRegistry(
            max_connections=settings.max_connections,
            send_timeout=settings.send_timeout,
            retry=settings.retry,
            keepalive=settings.keepalive,
        )
        #: The server this app runs in; the plain fallback until it is known.
        self.server: Server = Server()
        self.monitor = Monitor(self)
        #: Bound once here: every stream refers to this one object.
        self.offer = self._offer
        self._started = False
        self._lock = threading.Lock()

    def _offer(self, carrier: object, live: LiveStream) -> FastWriter | None:
        """Make the fast-path writer for a stream whose server offered ``carrier``."""
        return self.server.fast_writer(carrier, live, self.metrics)

    def start_in_process(self) -> None:
        """Start now if this process is a server worker that can be recognized
        before any request (a gunicorn worker); otherwise at the first request."""
        server = detect_process(self.settings.server)
        if server is not None:
            self.start(server)

    def start_for(self, environ: Mapping[str, t.Any]) -> None:
        """Start for the server that handles ``environ``; called before every request."""
        if not self._started:
            family = self.settings.server
            server = detect(environ, family)
            if server is None:
                logger.warning(
                    "SSE_PUSH_SERVER is %r, but this request is not served by it; streams"
                    " run as on an unrecognized server (no capacity, no socket). Set"
                    " SSE_PUSH_SERVER to the server that runs the app, or to 'detect'.",
                    family,
                )
                server = Server()
            self.start(server)

    def start(self, server: Server) -> None:
        """Bind to ``server``: take its capacity, warn about what a stream costs
        there, hook its shutdown, and start the monitor. Only the first call counts."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.server = server
        capacity = server.capacity()
        configured = self.settings.max_connections
        if configured is None:
            self.registry.max_connections = capacity
        elif capacity is not None and configured > capacity:
            logger.warning(
                "SSE_PUSH_MAX_CONNECTIONS is %d, but %s can hold only %d streams while still"
                " answering ordinary requests: past that, requests wait instead of clients being"
                " told to retry. Lower SSE_PUSH_MAX_CONNECTIONS, or %s.",
                configured,
                server.name,
                capacity,
                server.more_room,
            )
        logger.info(
            "flask_sse_push serves streams on %s (SSE_PUSH_SERVER=%s); capacity: %s.",
            server.name,
            self.settings.server,
            "no limit"
            if self.registry.max_connections is None
            else f"{self.registry.max_connections} stream(s) per worker process",
        )
        refusal = server.refusal()
        if refusal is not None:
            logger.error(refusal)
            self.registry.refusal = server.name
        warning = server.cost_warning(self.registry.max_connections)
        if warning is not None:
            logger.warning(warning)
        note = server.shutdown_note()
        if note is not None:
            logger.warning(note)
        epoll = server.epoll()
        if epoll is not None:
            self.registry.hangups = HangupWatch(epoll)
        server.watch_shutdown(self.monitor.request_shutdown, self.registry.__len__)
        self.monitor.start()


def get_runtime(app: Flask) -> Runtime:
    """Return ``app``'s runtime, or explain how to set it up."""
    try:
        runtime = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "flask_sse_push is not registered on this app. Did you forget to call"
            " sse.init_app(app)?"
        ) from None
    assert isinstance(runtime, Runtime)
    return runtime
