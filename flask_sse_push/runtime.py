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
import os
import sys
import threading
import typing as t

from .connections import StreamRegistry
from .control import ControlPlane
from .exceptions import BrokerError
from .monitor import Monitor
from .presence import Presence
from .servers import detect, detect_process
from .servers.base import Server
from .sockets import HangupWatch

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
    #: ``SSE_PUSH_MAX_STREAMS_PER_CLIENT``; ``None`` derives it (:func:`client_share`).
    max_streams_per_client: int | None = None

    #: The HMAC key of control messages (see :func:`~flask_sse_push.control_messages.signing_key`).
    control_key: bytes = b""
    #: ``SSE_PUSH_PRESENCE_TTL``: seconds a worker's presence record outlives it.
    presence_ttl: float = 15.0
    #: ``SSE_PUSH_PRESENCE_EVENTS``: channel patterns that get join and leave events.
    presence_events: tuple[str, ...] = ()
    #: ``SSE_PUSH_PUBLISH_TOKEN``: the bearer token of ``POST <prefix>/publish``.
    publish_token: str | None = None
    #: ``SSE_PUSH_PUBLISH_MAX_BYTES``: the largest body that endpoint reads.
    publish_max_bytes: int = 1 << 20
    #: The HMAC key of the session keys (see
    #: :func:`~flask_sse_push.session_scope.scope_secret`).
    scope_secret: bytes = b""
    #: ``SSE_PUSH_SERVER``: a server family of :data:`~flask_sse_push.servers.FAMILIES`.
    server: str = "detect"


#: Streams one client may hold by default, where the worker has room for many.
DEFAULT_CLIENT_SHARE = 16


def client_share(configured: int | None, capacity: int | None) -> int:
    """Streams one client may hold at once: ``configured``, or by default
    :data:`DEFAULT_CLIENT_SHARE` (more than the 6 connections a browser opens
    to one host over HTTP/1.1), at most half the worker's ``capacity`` and at
    least one, so one client can never fill a worker."""
    if configured is not None:
        return configured
    if capacity is None:
        return DEFAULT_CLIENT_SHARE
    return max(1, min(DEFAULT_CLIENT_SHARE, capacity // 2))


@dataclasses.dataclass
class Hooks:
    """The callbacks an :class:`~flask_sse_push.SSEPush` object registered, shared by its apps."""

    authorizers: list[Callable[[str], bool]] = dataclasses.field(default_factory=list)
    identify: Callable[[], t.Any] | None = None
    #: ``func(channel) -> bool`` hooks of ``POST <prefix>/publish``.
    publish_authorizers: list[Callable[[str], bool]] = dataclasses.field(default_factory=list)


class Runtime:
    """What one app's streams share in this process.

    :param broker: the app's broker.
    :param settings: the config, as read by ``init_app``.
    :param hooks: the extension object's hooks.
    :param metrics: the counters :meth:`SSEPush.stats` reports.
    """

    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        hooks: Hooks,
        metrics: Metrics,
        app: Flask | None = None,
    ) -> None:
        #: The app, for messages only (:meth:`app_target`).
        self._app = app
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
        #: Whether the hint to apply ProxyFix was logged (see ``views.accept``).
        self.proxy_hint_logged = False
        #: Whether the hint about identity types was logged (see ``SSEPush.revoke``).
        self.identity_hint_logged = False
        #: This process' end of the channel that carries revokes between workers.
        self.control = ControlPlane(self, settings.control_key)
        #: Who is connected here, as the other workers read it from the broker.
        self.presence = Presence(self, settings.presence_ttl, settings.presence_events)
        self.control.duties.append(self.presence.tick)
        #: Bound once here: every stream refers to this one object.
        self.offer = self._offer
        self._started = False
        self._lock = threading.Lock()

    def app_target(self) -> str:
        """The app as gunicorn would name it (``module:app`` or
        ``module:create_app()``); see :func:`app_target`."""
        return "app:create_app()" if self._app is None else app_target(self._app)

    def check_broker(self) -> str | None:
        """Run the broker's :meth:`~flask_sse_push.brokers.base.Broker.check`;
        return why it cannot work, or ``None``.

        The reason is logged (when it changes) and kept for
        :meth:`SSEPush.stats` as ``broker_problem``; the health endpoint calls
        this and keeps the reason out of its public answer.
        """
        problem: str | None
        try:
            self.broker.check()
        except BrokerError as exc:
            problem = str(exc)
        else:
            problem = None
        if problem != self.metrics.broker_problem:
            if problem is None:
                logger.info("The broker check passes again.")
            else:
                logger.error("The broker cannot work: %s", problem)
        self.metrics.broker_checked(problem)
        return problem

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
        self.registry.max_per_client = client_share(
            self.settings.max_streams_per_client, self.registry.max_connections
        )
        warning = server.cost_warning(self.registry.max_connections, self.app_target())
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
        self.control.start()
        # Off the request path: an unreachable broker may take its connect timeout.
        server.spawn(self._check_at_start)

    def _check_at_start(self) -> None:
        try:
            self.check_broker()
        except Exception:  # best effort, in a thread of its own
            # A broker closed while this runs (an app torn down at once) can fail
            # inside its client in any way; health checks the broker again anyway.
            logger.debug("The broker check at start did not finish.", exc_info=True)


def app_target(app: Flask) -> str:
    """Name ``app`` as ``gunicorn`` and ``flask --app`` take it: ``module:name`` when
    a global of its module is the app, else ``module:create_app()`` (the factory
    the module defines, or the usual name of one)."""
    module = sys.modules.get(app.import_name)
    name = app.import_name
    if name == "__main__":
        path = getattr(module, "__file__", None)
        name = os.path.splitext(os.path.basename(path))[0] if path else "app"
    for key, value in vars(module).items() if module is not None else ():
        if value is app and not key.startswith("_"):
            return f"{name}:{key}"
    factories = [f for f in ("create_app", "make_app") if callable(getattr(module, f, None))]
    return f"{name}:{(factories or ['create_app'])[0]}()"


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
