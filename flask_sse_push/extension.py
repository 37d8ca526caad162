"""The Flask extension object, :class:`SSEPush`."""

from __future__ import annotations

import logging
import os
import typing as t

import click
from flask import Flask, Response, current_app, has_app_context, has_request_context, request
from flask.cli import AppGroup

from .brokers import Broker, MemoryBroker, ReplayBudget, broker_from_url
from .config import load as load_config
from .connections import StreamInfo
from .control import Revocation, end_streams, identity_text, revoked_chunk
from .control_messages import signing_key
from .data import encode_data
from .event import ServerSentEvent
from .exceptions import BrokerError
from .grip.mode import configure as configure_grip
from .grip.mode import grip_mode, revoke_held
from .metrics import Metrics, PrometheusMetrics
from .runtime import EXTENSION_KEY, Hooks, Runtime, Settings, get_runtime
from .session_scope import request_identity, scope_secret, session_key
from .stream import (
    STOP_ID,
    GeneratorSubscription,
    StreamItem,
    check_source,
)
from .validation import check_channel, check_channels, check_published_event
from .views import make_blueprint, open_stream, request_last_event_id

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

logger = logging.getLogger("flask_sse_push")

_F = t.TypeVar("_F", bound="Callable[..., t.Any]")


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

        Reads the ``SSE_PUSH_*`` keys of ``app.config`` once; a key the config
        lacks is taken from the environment variable of the same name, else
        set to its default. Later changes have no effect.
        :doc:`configuration` lists them, with their types and defaults.

        :raises ValueError: a key's value has the wrong type or is out of
            bounds (the message names the key and what it takes).
        :raises RuntimeError: the extension is registered on ``app`` already.

        .. versionadded:: 0.1
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "flask_sse_push is already registered on this app. Call"
                " init_app(app) once per app, and share one SSEPush object between"
                " the places that publish."
            )
        config = load_config(app.config)
        broker = self._broker
        if broker is None:
            broker = broker_from_url(
                config["SSE_PUSH_BROKER_URL"],
                history=config["SSE_PUSH_HISTORY"],
                queue_size=config["SSE_PUSH_QUEUE_SIZE"],
                redis_prefix=config["SSE_PUSH_REDIS_PREFIX"],
                replay_budget=ReplayBudget(
                    config["SSE_PUSH_REPLAY_MAX_EVENTS"], config["SSE_PUSH_REPLAY_MAX_BYTES"]
                ),
            )
        settings = Settings(
            keepalive=config["SSE_PUSH_KEEPALIVE"],
            retry=config["SSE_PUSH_RETRY"],
            send_timeout=config["SSE_PUSH_SEND_TIMEOUT"],
            max_lifetime=config["SSE_PUSH_MAX_LIFETIME"],
            max_connections=config["SSE_PUSH_MAX_CONNECTIONS"],
            direct_writes=config["SSE_PUSH_DIRECT_WRITES"],
            max_streams_per_client=config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"],
            control_key=signing_key(app.config.get("SECRET_KEY")),
            scope_secret=scope_secret(app.config.get("SECRET_KEY")),
            presence_ttl=config["SSE_PUSH_PRESENCE_TTL"],
            presence_events=tuple(config["SSE_PUSH_PRESENCE_EVENTS"] or ()),
            publish_token=config["SSE_PUSH_PUBLISH_TOKEN"],
            publish_max_bytes=config["SSE_PUSH_PUBLISH_MAX_BYTES"],
            server=config["SSE_PUSH_SERVER"],
        )
        cors_origins = config["SSE_PUSH_CORS_ORIGINS"]
        metrics = PrometheusMetrics(broker) if config["SSE_PUSH_PROMETHEUS"] else Metrics()
        runtime = Runtime(broker, settings, self._hooks, metrics, app)
        app.extensions[EXTENSION_KEY] = runtime
        runtime.start_in_process()

        @app.before_request
        def _start_runtime() -> None:
            runtime.start_for(request.environ)

        app.register_blueprint(make_blueprint(config["SSE_PUSH_URL_PREFIX"], cors_origins))
        configure_grip(app, broker, config["SSE_PUSH_URL_PREFIX"])
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

        A source that raises before its first event would fail the same way
        on every reconnect: its stream ends with the stop id
        (:data:`~flask_sse_push.stream.STOP_ID`), the error is logged with its
        traceback, and the client's reconnect is answered ``204``, so
        ``EventSource`` stops. One that raises later ends with a ``retry:`` hint.

        :raises TypeError: ``source`` is not a plain iterable (an async
            generator, a generator function not called, a ``str``, a mapping
            or a single event); the message says what to pass instead.

        .. versionadded:: 0.1
        """
        check_source(source)
        if not has_request_context():
            raise RuntimeError(
                "SSEPush.stream() returns the response to the current request: call it"
                " in a view and return its result."
            )
        if request_last_event_id() == STOP_ID:
            return Response(status=204)
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
                user_id = current_user.get_id()
                return not channel.startswith("user.") or channel == f"user.{user_id}"

        .. versionadded:: 0.1
        """
        self._hooks.authorizers.append(func)
        return func

    def authorize_publish(self, func: _F) -> _F:
        """Register a hook that decides who may publish over HTTP, per channel.

        Registering one turns ``POST <prefix>/publish`` on (see :doc:`publishing`
        for its requests and answers). It is called as
        ``func(channel) -> bool`` for every channel the request publishes on,
        with the request context active; if any hook returns false the answer
        is ``403`` and nothing is published. A hook may also ``abort(401)``.
        With ``SSE_PUSH_PUBLISH_TOKEN`` set as well, the token is checked first.

        .. code-block:: python

            @sse.authorize_publish
            def may_publish(channel):
                return current_user.is_authenticated and current_user.is_admin

        .. versionadded:: 0.1
        """
        self._hooks.publish_authorizers.append(func)
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
        channel: str | None = None,
        predicate: Callable[[StreamInfo], bool] | None = None,
        *,
        identity: object = None,
        reconnect: bool = False,
    ) -> int:
        """End the live streams a selector names, in every worker and host that
        shares the broker; return how many ended in this process.

        .. code-block:: python

            @app.post("/logout")
            def logout():
                sse.revoke(identity=current_user.get_id())
                logout_user()
                ...

        :param channel: streams that serve this channel; ``None``: any channel.
        :param identity: streams whose :meth:`identify` result has this
            ``str()`` (identities travel between processes as text, so ``7``
            and ``"7"`` select the same streams); ``None``: any identity.
        :param predicate: a further test on each stream's :class:`StreamInfo`,
            such as ``lambda info: info.remote_addr == addr``. A function cannot
            travel to other processes: with a predicate the call ends streams
            **in this process only**. A predicate that ends no stream while
            streams of the channel have identities all of one type, which no
            ``identity ==`` could match if given another, logs a warning (once
            per process).
        :param reconnect: by default the stream ends for good: its client gets
            :data:`~flask_sse_push.stream.STOP_ID` as its last event id with a
            short ``retry:``, its one reconnect is answered ``204`` at once, and
            ``EventSource`` stops (a new page load starts afresh, through the
            ``authorize`` hooks). With ``True`` the stream ends with the usual
            ``retry:`` hint and keeps the client's cursor, so it comes back, is
            authorized again, and resumes without loss if it may.

        Streams of this process end before the call returns; the others as soon
        as their worker reads the control message from the broker (within
        milliseconds on a healthy broker). With the in-process broker there is
        no other worker to reach: the call ends this process' streams. In GRIP
        mode, a revoke without a predicate also ends the streams the proxy holds
        that it selects; one with a predicate does not reach them.

        :raises TypeError: neither ``channel``, ``identity`` nor ``predicate``
            was given (to end every stream, revoke each channel).
        :raises ChannelError: ``channel`` is not a valid channel name.
        :raises BrokerError: the message to the other workers could not be
            published; this process' streams have ended already.
        :raises RuntimeError: no application context is active.

        .. versionadded:: 0.1
        """
        if channel is None and identity is None and predicate is None:
            raise TypeError(
                "sse.revoke() needs a selector: channel=, identity= or both (for example"
                " sse.revoke(identity=current_user.get_id())), or a predicate for this"
                " process' streams."
            )
        if channel is not None:
            check_channel(channel)
        state = _current_state("revoke")
        revocation = Revocation(channel, identity_text(identity), reconnect)
        if predicate is not None:
            local = predicate

            def matches(info: StreamInfo) -> bool:
                return revocation.matches(info) and local(info)

            ended = end_streams(state, matches, reconnect=reconnect)
            if not ended and channel is not None and not state.identity_hint_logged:
                _warn_about_identity_types(state, channel)
        else:
            ended = end_streams(state, revocation.matches, reconnect=reconnect)
        logger.info(
            "SSE revoke: channel=%s identity=%s ended here=%d reconnect=%s everywhere=%s",
            channel,
            revocation.identity,
            ended,
            reconnect,
            predicate is None,
        )
        if predicate is None and not state.broker.process_local:
            state.control.send("revoke", revocation.to_json())
        if predicate is None:
            revoke_held(channel, revoked_chunk(state, reconnect), identity)
        elif grip_mode(current_app) is not None:
            logger.warning(
                "SSE revoke with a predicate leaves the streams the GRIP proxy holds open:"
                " their StreamInfo is not known here. Revoke by channel= and identity= instead."
            )
        return ended

    def presence(self, channel: str) -> dict[t.Any, int]:
        """Return who is connected to ``channel`` in every worker sharing the broker.

        A dict from identity (what :meth:`identify` returned; ``None`` for
        anonymous streams) to its number of open streams there. Identities
        cross processes as JSON: ``int`` and ``str`` come back as themselves,
        other values as their ``str()``.

        This worker's streams are counted as they are now; another worker's
        as of its last record, written within a quarter second of a change.
        A worker killed without warning drops out within
        ``SSE_PUSH_PRESENCE_TTL`` seconds. With the in-process broker the
        process is the deployment. Counts are of streams: with the browser
        client, which shares one stream among a browser's tabs, a count is a
        browser, not a tab.

        .. code-block:: python

            @app.get("/rooms/<name>/people")
            def people(name):
                return {"people": sorted(map(str, sse.presence(f"room.{name}")))}

        :raises ChannelError: ``channel`` is not a valid channel name.
        :raises BrokerError: the broker cannot be read.
        :raises RuntimeError: no application context is active.

        .. versionadded:: 0.1
        """
        check_channel(channel)
        return _current_state("presence").presence.who(channel)

    def session_key(self) -> str:
        """Return the current request's session key: the same for every request
        that :meth:`identify` gives the same identity, different for others.

        An HMAC-SHA256 of the identity keyed by ``SECRET_KEY``, 43 URL-safe
        characters. The browser client fetches it from
        ``GET <prefix>/session-key`` to share its stream only among tabs of one
        session (see :doc:`users`); render it into a page
        to do the same in your own code.

        :raises RuntimeError: no request context is active.

        .. versionadded:: 0.1
        """
        if not has_request_context():
            raise RuntimeError(
                "SSEPush.session_key() is the key of the current request's user: call it"
                " in a view or a template."
            )
        state = _current_state("session_key")
        return session_key(state.settings.scope_secret, request_identity(state))

    def stats(self, scope: str = "worker") -> dict[str, t.Any]:
        """Return what the current app's streams did in this process, or everywhere.

        Keys: ``clients_connected``, ``clients_by_channel`` (channel -> open
        streams), ``events_published`` (through :meth:`publish` here),
        ``deliveries`` (events written to clients), ``disconnects`` (reason ->
        count: ``client``, ``overflow``, ``lifetime``, ``shutdown``, ``revoked``,
        ``peer gone``, ...), ``overflow_disconnects``, ``replays`` (streams
        resumed from a cursor), ``resets`` (``reset`` events sent),
        ``broker_reconnects``, ``broker_rejected_messages`` (messages on the
        broker's own Redis channels that no publish made, dropped),
        ``broker_problem`` (why the last broker check,
        by the health endpoint or at the worker's start, found that the broker
        cannot work, such as missing Redis ACL rights; ``None`` while it passes),
        ``lag`` (the most events waiting for any one client right now) and
        ``control`` (messages from other workers:
        ``applied``, and ``ignored`` by reason: ``malformed``, ``forged``,
        ``stale``, ...), and ``clients_parked`` (of the connected clients, those
        whose stream waits right now without a greenlet of its own, under the
        package's gunicorn worker class; only for ``"worker"``). Counts start
        when the app is set up; under gunicorn each worker has its own.

        :param scope: ``"worker"`` (the default): this process.
            ``"deployment"``: every worker sharing the broker, added up from
            their records (this worker's now, the others' as of their last
            heartbeat, at most a third of ``SSE_PUSH_PRESENCE_TTL`` old, or a
            quarter second after a stream came or went), with ``lag`` the
            largest, and ``workers``: the ``worker``, ``host`` and ``pid`` of
            each worker counted.
        :raises ValueError: another ``scope``.
        :raises BrokerError: ``"deployment"``, and the broker cannot be read.

        .. versionadded:: 0.1
        """
        state = _current_state("stats")
        if scope == "deployment":
            return state.presence.deployment_stats()
        if scope != "worker":
            raise ValueError(f'scope must be "worker" or "deployment", not {scope!r}.')
        snapshot = state.metrics.snapshot(state.broker, state.registry)
        snapshot["control"] = state.control.snapshot()
        snapshot["clients_parked"] = state.server.parked()
        return snapshot

    def streams(self) -> list[StreamInfo]:
        """Return the live streams of the current app in this process.

        .. versionadded:: 0.1
        """
        return [stream.info for stream in _current_state("streams").registry.streams()]


def _warn_about_identity_types(state: Runtime, channel: str) -> None:
    """Warn when a revoke predicate matched none of a channel's identified streams:
    comparing ``info.identity`` with a value of another type (``7 == "7"``) is
    false, silently."""
    kinds = {
        type(stream.info.identity).__name__
        for stream in state.registry.streams()
        if channel in stream.info.channels and stream.info.identity is not None
    }
    if kinds:
        state.identity_hint_logged = True  # once: revoking a user absent here is common
        logger.warning(
            "sse.revoke(%r, predicate) ended no stream, though the channel has streams whose"
            " identity is a %s. If the predicate compares info.identity with a value of"
            " another type (7 == '7' is false), pass identity=... instead, which compares"
            " as text.",
            channel,
            " or ".join(sorted(kinds)),
        )


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
        if os.environ.get("SSE_PUSH_BROKER_URL"):
            where = (
                "the app's config sets SSE_PUSH_BROKER_URL to"
                f" {current_app.config['SSE_PUSH_BROKER_URL']!r}, or passes a broker, and"
                " either takes precedence over the environment variable"
            )
        else:
            where = (
                "SSE_PUSH_BROKER_URL is set neither in the app's config nor in the environment"
                " of this command"
            )
        raise click.ClickException(
            f"This app uses the in-process broker ({where}), which"
            " delivers only to clients of the process that publishes. This command runs"
            " in a process of its own that has no clients, so nobody would receive the"
            " event, and nothing was published. Set SSE_PUSH_BROKER_URL to a Redis URL"
            " (for example redis://127.0.0.1:6379/0) in the environment (or the config) of"
            " the web app and of this command, or publish from the web app itself with"
            " sse.publish()."
        )
    grip = grip_mode(current_app)
    try:
        if grip is not None:
            click.echo(grip.publish(name, message))
        else:
            click.echo(state.broker.publish(name, message))
    except BrokerError as exc:
        raise click.ClickException(f"Nothing was published: {exc}") from exc


@_cli.command("revoke")
@click.option("--channel", default=None, help="End the streams of this channel.")
@click.option("--identity", default=None, help="End the streams of this identity (as text).")
@click.option(
    "--reconnect",
    is_flag=True,
    help="Let the clients come back (and be authorized again) instead of stopping them.",
)
def _revoke_command(channel: str | None, identity: str | None, reconnect: bool) -> None:
    """End the matching streams in every worker sharing the app's broker.

    Needs a broker that other processes share (SSE_PUSH_BROKER_URL=redis://...).
    """
    state = get_runtime(current_app)
    if channel is None and identity is None:
        raise click.UsageError("Give --channel, --identity or both.")
    if channel is not None:
        try:
            check_channel(channel)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    if isinstance(state.broker, MemoryBroker):
        raise click.ClickException(
            "This app uses the in-process broker (SSE_PUSH_BROKER_URL is not set), whose"
            " streams live in the web server's process, which this command cannot reach;"
            " nothing was revoked. Set SSE_PUSH_BROKER_URL to a Redis URL in the config of"
            " the web app and of this command, or call sse.revoke() in the web app."
        )
    revocation = Revocation(channel, identity, reconnect)
    try:
        state.control.send("revoke", revocation.to_json())
    except BrokerError as exc:
        raise click.ClickException(f"Nothing was revoked: {exc}") from exc
    click.echo(f"Revoke sent: channel={channel} identity={identity} reconnect={reconnect}")
