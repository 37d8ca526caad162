"""The Flask extension object, :class:`SSEPush`."""

from __future__ import annotations

import logging
import typing as t

import click
from flask import Flask, Response, current_app, has_app_context, has_request_context, request
from flask.cli import AppGroup

from .brokers import Broker, MemoryBroker, broker_from_url
from .connections import Ending, StreamInfo
from .cors import check_origins
from .data import encode_data
from .event import ServerSentEvent
from .exceptions import BrokerError
from .grip.mode import configure as configure_grip
from .grip.mode import grip_mode, revoke_held
from .metrics import Metrics, PrometheusMetrics
from .runtime import EXTENSION_KEY, Hooks, Runtime, Settings, get_runtime
from .stream import GeneratorSubscription, StreamItem, closing_chunk, reconnect_retry, stop_chunk
from .validation import check_channel, check_channels, check_published_event
from .views import make_blueprint, open_stream

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

logger = logging.getLogger("flask_sse_push")

_F = t.TypeVar("_F", bound="Callable[..., t.Any]")

#: Every configuration key :meth:`SSEPush.init_app` reads, with its default.
DEFAULTS: dict[str, t.Any] = {
    "SSE_PUSH_BROKER_URL": None,
    "SSE_PUSH_URL_PREFIX": "/events",
    "SSE_PUSH_KEEPALIVE": 15.0,
    "SSE_PUSH_RETRY": None,
    "SSE_PUSH_HISTORY": 1000,
    "SSE_PUSH_QUEUE_SIZE": 1000,
    "SSE_PUSH_REDIS_PREFIX": "sse:",
    "SSE_PUSH_SEND_TIMEOUT": 30.0,
    "SSE_PUSH_MAX_LIFETIME": 600.0,
    "SSE_PUSH_MAX_CONNECTIONS": None,
    "SSE_PUSH_CORS_ORIGINS": None,
    "SSE_PUSH_PROMETHEUS": False,
    "SSE_PUSH_DIRECT_WRITES": True,
    "SSE_PUSH_GRIP_URL": None,
    "SSE_PUSH_GRIP_KEY": None,
    "SSE_PUSH_GRIP_REQUIRED": False,
}


def _current_state(method: str) -> Runtime:
    """Return the current app's runtime, or explain what ``sse.<method>()`` needs."""
    if not has_app_context():
        raise RuntimeError(
            f"SSEPush.{method}() was called outside an application context, so it"
            " cannot tell which app (and broker) to use. Call it in a view or a CLI"
            " command, or wrap it in `with app.app_context():`. In a process without"
            " the Flask app (a task queue worker, a script), publish with"
            ' flask_sse_push.Publisher("redis://...") instead.'
        )
    return get_runtime(current_app)


def _positive_number(app: Flask, key: str) -> float:
    value = app.config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{key} must be a number of seconds > 0, not {value!r}.")
    return float(value)


def _retry(app: Flask) -> int | None:
    value = app.config["SSE_PUSH_RETRY"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(
            f"SSE_PUSH_RETRY must be None or an int number of milliseconds >= 0, not {value!r}."
        )
    return None if value is None else int(value)


def _flag(app: Flask, key: str) -> bool:
    value = app.config[key]
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be True or False, not {value!r}.")
    return value


def _optional_seconds(app: Flask, key: str) -> float | None:
    return None if app.config[key] is None else _positive_number(app, key)


def _max_connections(app: Flask) -> int | None:
    value = app.config["SSE_PUSH_MAX_CONNECTIONS"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"SSE_PUSH_MAX_CONNECTIONS must be None or an int >= 1, not {value!r}.")
    return None if value is None else int(value)


class SSEPush:
    """Server-Sent Events for a Flask app.

    .. code-block:: python

        sse = SSEPush(app)              # or: sse = SSEPush(); sse.init_app(app)

        @app.post("/orders")
        def create_order():
            ...
            sse.publish({"order": order.id}, event="created", channel="orders")

    Browsers then listen with ``new EventSource("/events?channel=orders")``.

    :param app: the app to register on now; pass none and call :meth:`init_app`
        later with the application factory pattern.
    :param broker: the broker to use for every app this object is registered on.
        If not given, each app gets the broker ``SSE_PUSH_BROKER_URL`` names.

    .. versionadded:: 0.1
    """

    def __init__(self, app: Flask | None = None, *, broker: Broker | None = None) -> None:
        self._broker = broker
        self._hooks = Hooks()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension and its blueprint on ``app``.

        Reads these keys once; later changes to them have no effect:

        - ``SSE_PUSH_BROKER_URL`` (``None``): ``None`` for the in-process broker,
          ``redis://host:port/db`` for Redis.
        - ``SSE_PUSH_URL_PREFIX`` (``"/events"``): where the stream is served.
        - ``SSE_PUSH_KEEPALIVE`` (``15.0``): seconds of quiet before a keepalive.
        - ``SSE_PUSH_RETRY`` (``None``): milliseconds sent as ``retry:`` on connect.
        - ``SSE_PUSH_HISTORY`` (``1000``): events kept per channel for replay.
        - ``SSE_PUSH_QUEUE_SIZE`` (``1000``): events a client may fall behind by.
        - ``SSE_PUSH_REDIS_PREFIX`` (``"sse:"``): namespace of the Redis keys.
        - ``SSE_PUSH_SEND_TIMEOUT`` (``30.0``): seconds a write to a client may
          go without progress (one piece of at most 64 KiB not taken) before
          the connection is dropped; a slow but steady client is never cut. A
          client that acknowledges nothing for keepalive + send timeout (it
          vanished without a FIN) is dropped too, and that sum is set as
          ``TCP_USER_TIMEOUT`` (Linux). Enforced where the server exposes the
          socket (gunicorn, ``flask run``).
        - ``SSE_PUSH_MAX_LIFETIME`` (``600.0``): seconds after which a channel
          stream ends (at 80-100 %, at random) with a ``retry:`` hint, so the
          client reconnects, resumes, and may land on another worker. ``None``:
          never. Streams of :meth:`stream` are not cut, as only the application
          knows how to resume them.
        - ``SSE_PUSH_MAX_CONNECTIONS`` (``None``): streams per worker process;
          more get ``200`` with ``retry:`` and an immediate end. ``None``: what
          the server can hold while ordinary requests still get through
          (gunicorn's gevent worker: ``worker_connections`` less a tenth, at
          most 100; a threaded server: its threads less a quarter, at least
          one), or no limit where the server sets none.
        - ``SSE_PUSH_CORS_ORIGINS`` (``None``): origins such as
          ``["https://app.example.com"]`` that may open streams with credentials
          from another site; others get ``403``. Needs ``flask-sse-push[cors]``.
        - ``SSE_PUSH_PROMETHEUS`` (``False``): also export :meth:`stats` figures
          as ``prometheus_client`` metrics (see
          :class:`~flask_sse_push.metrics.PrometheusMetrics`). Needs
          ``flask-sse-push[metrics]``.
        - ``SSE_PUSH_DIRECT_WRITES`` (``True``): under this package's gunicorn
          worker class (``-k flask_sse_push.servers.gunicorn.GeventWorker``),
          write events to waiting plain-HTTP/1.x streams straight from the
          fan-out, through the worker's own framing and byte count, instead of
          waking each stream's greenlet (see
          :mod:`flask_sse_push.servers.fastpath`). A stream whose body a
          middleware wraps, and every other server, takes the ordinary path.
        - ``SSE_PUSH_GRIP_URL`` (``None``): the publish API of a GRIP proxy
          (``http://127.0.0.1:5561`` for Pushpin, Fanout's
          ``https://api.fastly.com/service/<id>?key=<token>``), or a list of
          them: streams that come through the proxy are held by it (see
          :doc:`/grip`). Needs the Redis broker and ``flask-sse-push[grip]``.
        - ``SSE_PUSH_GRIP_KEY`` (``None``): what verifies the proxy's
          ``Grip-Sig``: Pushpin's ``sig_key``, or Fanout's public key (PEM).
        - ``SSE_PUSH_GRIP_REQUIRED`` (``False``): answer ``403`` to stream
          requests that did not come through the proxy, instead of serving them.

        :raises RuntimeError: the extension is registered on ``app`` already.

        .. versionadded:: 0.1
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flask_sse_push is already registered on this app. Call"
                " init_app(app) once per app, and share one SSEPush object between"
                " the places that publish."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        broker = self._broker
        if broker is None:
            broker = broker_from_url(
                app.config["SSE_PUSH_BROKER_URL"],
                history=int(app.config["SSE_PUSH_HISTORY"]),
                queue_size=int(app.config["SSE_PUSH_QUEUE_SIZE"]),
                redis_prefix=app.config["SSE_PUSH_REDIS_PREFIX"],
            )
        settings = Settings(
            keepalive=_positive_number(app, "SSE_PUSH_KEEPALIVE"),
            retry=_retry(app),
            send_timeout=_positive_number(app, "SSE_PUSH_SEND_TIMEOUT"),
            max_lifetime=_optional_seconds(app, "SSE_PUSH_MAX_LIFETIME"),
            max_connections=_max_connections(app),
            direct_writes=_flag(app, "SSE_PUSH_DIRECT_WRITES"),
        )
        cors_origins = check_origins(app.config["SSE_PUSH_CORS_ORIGINS"])
        metrics = PrometheusMetrics(broker) if app.config["SSE_PUSH_PROMETHEUS"] else Metrics()
        runtime = Runtime(broker, settings, self._hooks, metrics)
        app.extensions[EXTENSION_KEY] = runtime
        runtime.start_in_process()

        @app.before_request
        def _start_runtime() -> None:
            runtime.start_for(request.environ)

        app.register_blueprint(make_blueprint(app.config["SSE_PUSH_URL_PREFIX"], cors_origins))
        configure_grip(app, broker, app.config["SSE_PUSH_URL_PREFIX"])
        app.cli.add_command(_cli)

    @property
    def broker(self) -> Broker:
        """The current app's broker.

        .. versionadded:: 0.1
        """
        return _current_state("broker").broker

    def publish(
        self,
        data: t.Any,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        channel: str = "default",
    ) -> str:
        """Send an event to every client of ``channel``, and return its id.

        Works wherever the app context is active: a view, a CLI command, a
        ``with app.app_context():`` block. Outside a Flask process, use
        :class:`flask_sse_push.Publisher` with the same broker URL.

        :param data: a ``str`` is sent as is; anything else is JSON-encoded with
            the app's JSON provider (see :func:`flask_sse_push.data.encode_data`).
        :param event: the event type (``None`` is ``message``).
        :param id: an explicit event id; by default the broker assigns one.
        :param retry: a reconnection delay in milliseconds for the clients.
        :param channel: the channel name.
        :raises ValueError: a field or the channel name is invalid, or the event
            would break its clients: a reserved type (``reset``, ``open``,
            ``error``) or an id that cannot come back as ``Last-Event-ID``
            (see :func:`~flask_sse_push.validation.check_published_id`);
            nothing is sent.
        :raises TypeError: a field has the wrong type, or ``data`` is neither a
            ``str`` nor JSON-serializable (the message names the field); nothing
            is sent.
        :raises BrokerError: the broker could not take the event.
        :raises RuntimeError: no application context is active.

        .. versionadded:: 0.1
        """
        state = _current_state("publish")
        text = encode_data(data, current_app.json.dumps)
        message = check_published_event(ServerSentEvent(text, event=event, id=id, retry=retry))
        grip = grip_mode(current_app)
        if grip is not None:
            event_id = grip.publish(check_channel(channel), message)
        else:
            event_id = state.broker.publish(check_channel(channel), message)
        state.metrics.published()
        return event_id

    def cursor(self, *channels: str) -> str:
        """Return a cursor for ``?last_event_id=`` that resumes from this moment.

        Render it into the page, so events published between the page load and
        the ``EventSource`` connecting are not missed.

        .. versionadded:: 0.1
        """
        names = check_channels(list(channels) or ["default"])
        return _current_state("cursor").broker.cursor(names)

    def stream(self, source: Iterable[StreamItem]) -> Response:
        """Return a streaming response for an application's own event source.

        ``source`` yields :class:`ServerSentEvent` objects, ``str`` data, or
        mappings of the fields (non-``str`` ``data`` is JSON-encoded). It runs in
        its own thread or greenlet, so keepalives keep flowing while it blocks,
        and it has no request context: read the request before you create it.
        When the client leaves, a source in a greenlet (under gevent) gets
        ``GreenletExit`` where it blocks, so its ``finally`` runs at once; one in
        an OS thread (threaded servers) is closed at its next item.

        .. code-block:: python

            @app.get("/clock")
            def clock():
                def ticks():
                    while True:
                        yield {"event": "tick", "data": time.ctime()}
                        time.sleep(1)
                return sse.stream(ticks())

        .. versionadded:: 0.1
        """
        if not has_request_context():
            raise RuntimeError(
                "SSEPush.stream() returns the response to the current request: call it"
                " in a view and return its result."
            )
        runtime = _current_state("stream")
        dumps = current_app.json.dumps
        spawn = runtime.server.spawn
        info = StreamInfo(channels=(), remote_addr=request.remote_addr)
        return open_stream(
            runtime, info, lambda: GeneratorSubscription(source, dumps=dumps, spawn=spawn)
        )

    def authorize(self, func: _F) -> _F:
        """Register a hook that decides whether the request may stream a channel.

        It is called as ``func(channel) -> bool`` for every channel a client asks
        for, before the stream starts, on the first connection and on every
        reconnect, with the request context active (``request``, ``g``, your
        login extension's ``current_user``). If any hook returns false for any
        channel the answer is ``403`` with a plain-text reason, and
        ``EventSource`` does not retry. A hook may also ``abort(401)``.

        .. code-block:: python

            @sse.authorize
            def may_listen(channel):
                return not channel.startswith("user.") or channel == f"user.{current_user.id}"

        .. versionadded:: 0.1
        """
        self._hooks.authorizers.append(func)
        return func

    def identify(self, func: _F) -> _F:
        """Register ``func() -> object`` to label each stream, for :meth:`revoke`.

        It runs once per accepted stream, after the :meth:`authorize` hooks, in
        the request context; its result becomes :attr:`StreamInfo.identity`.
        Registering another replaces it.

        .. code-block:: python

            @sse.identify
            def who():
                return current_user.get_id()

        .. versionadded:: 0.1
        """
        self._hooks.identify = func
        return func

    def revoke(
        self,
        channel: str,
        predicate: Callable[[StreamInfo], bool] | None = None,
        *,
        reconnect: bool = False,
    ) -> int:
        """End the live streams of ``channel`` in this process; return how many.

        :param predicate: only streams whose :class:`StreamInfo` it returns true
            for, for example ``lambda info: info.identity == user_id``; ``None``
            ends every stream of the channel.
        :param reconnect: by default the stream ends for good: its client gets
            :data:`~flask_sse_push.stream.STOP_ID` as its last event id, the
            reconnect it makes with it is answered ``204``, and ``EventSource``
            stops (a new page load starts afresh, through the ``authorize``
            hooks). With ``True`` the stream ends with a ``retry:`` hint
            instead and keeps the client's cursor, so it comes back, is
            authorized again, and resumes without loss if it may.

        Streams in other worker processes are not affected: call it in each,
        for example from a handler of a control channel. In GRIP mode, a
        revoke without ``predicate`` also ends the streams of ``channel`` the
        proxy holds (the count covers this process only); one with a predicate
        does not reach them.

        .. versionadded:: 0.1
        """
        check_channel(channel)
        state = _current_state("revoke")
        if reconnect:
            ending = Ending(
                "revoked", closing_chunk("revoked", reconnect_retry(state.settings.retry))
            )
        else:
            ending = Ending("revoked", stop_chunk("revoked"))

        def matches(info: StreamInfo) -> bool:
            return channel in info.channels and (predicate is None or predicate(info))

        ended = state.registry.end_where(matches, ending)
        if predicate is None:
            revoke_held(channel, ending.final)
        elif grip_mode(current_app) is not None:
            logger.warning(
                "SSE revoke with a predicate leaves the streams the GRIP proxy holds open:"
                " their StreamInfo is not known here. Revoke the whole channel instead."
            )
        logger.info("SSE revoke: channel=%s ended=%d reconnect=%s", channel, ended, reconnect)
        return ended

    def stats(self) -> dict[str, t.Any]:
        """Return what the current app's streams did in this process.

        Keys: ``clients_connected``, ``clients_by_channel`` (channel -> open
        streams), ``events_published`` (through :meth:`publish` here),
        ``deliveries`` (events written to clients), ``disconnects`` (reason ->
        count: ``client``, ``overflow``, ``lifetime``, ``shutdown``, ``revoked``,
        ``peer gone``, ...), ``overflow_disconnects``, ``replays`` (streams
        resumed from a cursor), ``resets`` (``reset`` events sent),
        ``broker_reconnects`` and ``lag`` (the most events waiting for any one
        client right now). Counts start when the app is set up; under gunicorn
        each worker has its own (see ``SSE_PUSH_PROMETHEUS`` to add them up).

        .. versionadded:: 0.1
        """
        state = _current_state("stats")
        return state.metrics.snapshot(state.broker, state.registry)

    def streams(self) -> list[StreamInfo]:
        """Return the live streams of the current app in this process.

        .. versionadded:: 0.1
        """
        return [stream.info for stream in _current_state("streams").registry.streams()]


_cli = AppGroup("sse", help="Server-Sent Events commands.")


@_cli.command("publish")
@click.option("--channel", default="default", show_default=True, help="Channel name.")
@click.option("--event", default=None, help="Event type (default: message).")
@click.option("--id", "event_id", default=None, help="Explicit event id.")
@click.argument("data")
def _publish_command(channel: str, event: str | None, event_id: str | None, data: str) -> None:
    """Publish DATA through the app's configured broker and print its id.

    Needs a broker that other processes share (SSE_PUSH_BROKER_URL=redis://...).
    """
    state = get_runtime(current_app)
    try:
        message = check_published_event(ServerSentEvent(data, event=event, id=event_id))
        name = check_channel(channel)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    if isinstance(state.broker, MemoryBroker):
        raise click.ClickException(
            "This app uses the in-process broker (SSE_PUSH_BROKER_URL is not set), which"
            " delivers only to clients of the process that publishes. This command runs"
            " in a process of its own that has no clients, so nobody would receive the"
            " event, and nothing was published. Set SSE_PUSH_BROKER_URL to a Redis URL"
            " (for example redis://127.0.0.1:6379/0) in the config of the web app and of"
            " this command, or publish from the web app itself with sse.publish()."
        )
    grip = grip_mode(current_app)
    try:
        if grip is not None:
            click.echo(grip.publish(name, message))
        else:
            click.echo(state.broker.publish(name, message))
    except BrokerError as exc:
        raise click.ClickException(f"Nothing was published: {exc}") from exc
