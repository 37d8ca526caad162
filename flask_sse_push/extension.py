"""The Flask extension object, :class:`SSEPush`."""

from __future__ import annotations

import dataclasses
import typing as t

import click
from flask import Flask, Response, current_app
from flask.cli import AppGroup

from .brokers import Broker, broker_from_url
from .event import ServerSentEvent
from .stream import GeneratorSubscription, StreamItem, event_stream
from .validation import check_channel, check_channels
from .views import make_blueprint, sse_response

if t.TYPE_CHECKING:
    from collections.abc import Iterable

#: Every configuration key :meth:`SSEPush.init_app` reads, with its default.
DEFAULTS: dict[str, t.Any] = {
    "SSE_PUSH_BROKER_URL": None,
    "SSE_PUSH_URL_PREFIX": "/events",
    "SSE_PUSH_KEEPALIVE": 15.0,
    "SSE_PUSH_RETRY": None,
    "SSE_PUSH_HISTORY": 1000,
    "SSE_PUSH_QUEUE_SIZE": 1000,
    "SSE_PUSH_REDIS_PREFIX": "sse:",
}

EXTENSION_KEY = "sse_push"


@dataclasses.dataclass
class _State:
    """What one app's extension needs at run time, read once from its config."""

    broker: Broker
    keepalive: float
    retry: int | None


def get_state(app: Flask) -> _State:
    """Return ``app``'s extension state, or explain how to set it up."""
    try:
        state = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            "flask_sse_push is not registered on this app. Did you forget to call"
            " sse.init_app(app)?"
        ) from None
    assert isinstance(state, _State)
    return state


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

        :raises RuntimeError: the extension is registered on ``app`` already.
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
        app.extensions[EXTENSION_KEY] = _State(
            broker=broker,
            keepalive=_positive_number(app, "SSE_PUSH_KEEPALIVE"),
            retry=_retry(app),
        )
        app.register_blueprint(make_blueprint(app.config["SSE_PUSH_URL_PREFIX"]))
        app.cli.add_command(_cli)

    @property
    def broker(self) -> Broker:
        """The current app's broker."""
        return get_state(current_app).broker

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
            the app's JSON provider.
        :param event: the event type (``None`` is ``message``).
        :param id: an explicit event id; by default the broker assigns one.
        :param retry: a reconnection delay in milliseconds for the clients.
        :param channel: the channel name.
        :raises ValueError: a field or the channel name is invalid; nothing is sent.
        :raises TypeError: a field has the wrong type; nothing is sent.
        :raises BrokerError: the broker could not take the event.
        """
        state = get_state(current_app)
        text = data if isinstance(data, str) else current_app.json.dumps(data)
        message = ServerSentEvent(text, event=event, id=id, retry=retry)
        return state.broker.publish(check_channel(channel), message)

    def cursor(self, *channels: str) -> str:
        """Return a cursor for ``?last_event_id=`` that resumes from this moment.

        Render it into the page, so events published between the page load and
        the ``EventSource`` connecting are not missed.
        """
        names = check_channels(list(channels) or ["default"])
        return get_state(current_app).broker.cursor(names)

    def stream(self, source: Iterable[StreamItem]) -> Response:
        """Return a streaming response for an application's own event source.

        ``source`` yields :class:`ServerSentEvent` objects, ``str`` data, or
        mappings of the fields (non-``str`` ``data`` is JSON-encoded). It runs in
        its own thread or greenlet, so keepalives keep flowing while it blocks,
        and it has no request context: read the request before you create it.

        .. code-block:: python

            @app.get("/clock")
            def clock():
                def ticks():
                    while True:
                        yield {"event": "tick", "data": time.ctime()}
                        time.sleep(1)
                return sse.stream(ticks())
        """
        state = get_state(current_app)
        subscription = GeneratorSubscription(source, dumps=current_app.json.dumps)
        chunks = event_stream(subscription, keepalive=state.keepalive, retry=state.retry)
        return sse_response(chunks, subscription.close)


_cli = AppGroup("sse", help="Server-Sent Events commands.")


@_cli.command("publish")
@click.option("--channel", default="default", show_default=True, help="Channel name.")
@click.option("--event", default=None, help="Event type (default: message).")
@click.option("--id", "event_id", default=None, help="Explicit event id.")
@click.argument("data")
def _publish_command(channel: str, event: str | None, event_id: str | None, data: str) -> None:
    """Publish DATA through the app's configured broker and print its id."""
    state = get_state(current_app)
    try:
        message = ServerSentEvent(data, event=event, id=event_id)
        sent = state.broker.publish(check_channel(channel), message)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(sent)
