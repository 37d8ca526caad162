"""The extension object: defaults, the app-factory pattern, configuration checked at
``init_app``, errors that say what to do, and publishing.
"""

from __future__ import annotations

import typing as t

import fakeredis
import pytest
from flask import Flask

from flask_sse_push import MemoryBroker, ServerSentEvent, SSEPush
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.config import KEYS


class _Order:
    """An application object the JSON encoder does not know."""

    def __init__(self, number: int) -> None:
        self.number = number


def test_init_app_twice_explains_what_to_do(app: Flask) -> None:
    """A second registration is a mistake; the message says how to share one object."""
    sse = SSEPush(app)
    with pytest.raises(RuntimeError, match="once per app"):
        sse.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        SSEPush(app)


def test_config_defaults_are_set() -> None:
    """Every key gets its documented default, and the state lives under 'sse_push'."""
    app = Flask("defaults")
    SSEPush(app)
    for key in KEYS:
        assert app.config[key.name] == key.default
    assert isinstance(app.extensions["sse_push"].broker, MemoryBroker)
    defaults = {key.name: key.default for key in KEYS}
    assert defaults["SSE_PUSH_URL_PREFIX"] == "/events"
    assert defaults["SSE_PUSH_KEEPALIVE"] == 15.0
    assert defaults["SSE_PUSH_HISTORY"] == 1000


def test_factory_pattern_and_two_apps_are_independent() -> None:
    """One SSEPush object, two apps: each has its own broker and history."""
    sse = SSEPush()
    first, second = Flask("first"), Flask("second")
    for app in (first, second):
        sse.init_app(app)
    with first.app_context():
        sse.publish("to first")
        assert sse.broker is first.extensions["sse_push"].broker
    with second.app_context():
        assert sse.broker is not first.extensions["sse_push"].broker
        subscription = sse.broker.subscribe(["default"], last_event_id=sse.cursor())
        assert subscription.get(0) == []
        subscription.close()


def test_url_prefix_is_configurable(app: Flask) -> None:
    app.config["SSE_PUSH_URL_PREFIX"] = "/stream"
    SSEPush(app)
    assert app.test_client().get("/events").status_code == 404
    response = app.test_client().get("/stream")
    assert response.status_code == 200
    response.close()


def test_given_broker_is_used_for_every_app(app: Flask) -> None:
    broker = MemoryBroker()
    sse = SSEPush(app, broker=broker)
    with app.app_context():
        assert sse.broker is broker


_OUTSIDE_APP_CONTEXT: dict[str, t.Callable[[SSEPush], object]] = {
    "publish": lambda sse: sse.publish("hi"),
    "cursor": lambda sse: sse.cursor("default"),
    "revoke": lambda sse: sse.revoke("default"),
    "stats": lambda sse: sse.stats(),
    "streams": lambda sse: sse.streams(),
    "broker": lambda sse: sse.broker,
}


@pytest.mark.parametrize("method", sorted(_OUTSIDE_APP_CONTEXT))
def test_use_outside_app_context_says_what_to_do(app: Flask, method: str) -> None:
    """Each method that needs the current app says so in our words, naming both
    fixes (an app context, or Publisher), instead of Flask's generic error."""
    sse = SSEPush(app)
    with pytest.raises(RuntimeError) as raised:
        _OUTSIDE_APP_CONTEXT[method](sse)
    message = str(raised.value)
    assert message.startswith(f"SSEPush.{method}() was called outside an application context")
    assert "with app.app_context():" in message
    assert "flask_sse_push.Publisher(" in message


def test_stream_outside_a_request_says_what_to_do(sse: SSEPush) -> None:
    """sse.stream() builds a response for a request: in a bare app context it says so."""
    with pytest.raises(RuntimeError, match=r"SSEPush.stream\(\) returns the response"):
        sse.stream(iter(["x"]))


def test_unregistered_app_is_explained() -> None:
    sse = SSEPush()
    app = Flask("bare")
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        sse.publish("x")


@pytest.mark.parametrize(
    ("key", "value"),
    [("SSE_PUSH_KEEPALIVE", 0), ("SSE_PUSH_KEEPALIVE", "15"), ("SSE_PUSH_RETRY", -5)],
)
def test_bad_config_is_refused_at_init(app: Flask, key: str, value: object) -> None:
    app.config[key] = value
    with pytest.raises(ValueError, match=key):
        SSEPush(app)


def test_unknown_broker_url_scheme_is_refused(app: Flask) -> None:
    app.config["SSE_PUSH_BROKER_URL"] = "kafka://localhost"
    with pytest.raises(ValueError, match="unknown scheme"):
        SSEPush(app)


class TestPublish:
    def test_non_str_data_is_json_encoded_with_the_app_provider(self, sse: SSEPush) -> None:
        subscription = sse.broker.subscribe(["default"])
        event_id = sse.publish({"b": 1, "a": [1, 2]}, event="update")
        (event,) = subscription.get(0)
        assert event == ServerSentEvent('{"a": [1, 2], "b": 1}', event="update", id=event_id)
        subscription.close()

    def test_str_data_is_sent_as_is(self, sse: SSEPush) -> None:
        subscription = sse.broker.subscribe(["news"])
        sse.publish('{"not": "re-encoded"}', channel="news")
        assert subscription.get(0)[0].data == '{"not": "re-encoded"}'
        subscription.close()

    def test_explicit_id_is_returned_and_sent(self, sse: SSEPush) -> None:
        subscription = sse.broker.subscribe(["default"])
        assert sse.publish("x", id="order-42") == "order-42"
        assert subscription.get(0)[0].id == "order-42"
        subscription.close()

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"event": "a\nb"},
            {"id": "a\rb"},
            {"id": "a\0b"},
            {"retry": -1},
            {"channel": "bad channel"},
            {"channel": ""},
            {"channel": "x" * 129},
        ],
    )
    def test_bad_arguments_raise_and_nothing_is_sent(
        self, sse: SSEPush, kwargs: dict[str, object]
    ) -> None:
        subscription = sse.broker.subscribe(["default"])
        with pytest.raises(ValueError):
            sse.publish("x", **kwargs)  # type: ignore[arg-type]
        assert subscription.get(0) == []
        subscription.close()

    @pytest.mark.parametrize(
        ("data", "type_name"),
        [(_Order(7), "_Order"), ({"tags": {"a"}}, "dict"), (b"raw", "bytes")],
    )
    def test_data_json_cannot_encode_is_a_type_error_naming_the_field(
        self, sse: SSEPush, data: object, type_name: str
    ) -> None:
        """Non-JSON data gets our TypeError: it names the field, the type and the
        fix, and nothing is sent."""
        subscription = sse.broker.subscribe(["default"])
        with pytest.raises(TypeError) as raised:
            sse.publish(data)
        message = str(raised.value)
        assert message.startswith(
            f"data must be a str or a JSON-serializable value, not {type_name}"
        )
        assert "Pass a str" in message
        assert subscription.get(0) == []
        subscription.close()

    def test_retry_as_string_is_a_type_error(self, sse: SSEPush) -> None:
        with pytest.raises(TypeError, match="retry"):
            sse.publish("x", retry="10")  # type: ignore[arg-type]


def _shared_broker() -> RedisBroker:
    """A broker other processes could share (on fakeredis): the CLI accepts it."""
    return RedisBroker(fakeredis.FakeRedis(server=fakeredis.FakeServer()))


def test_cli_publish_refuses_the_in_process_broker(app: Flask) -> None:
    """With the default broker the command would publish into its own process,
    where nobody listens: it refuses, says why and how to fix it, and exits 1."""
    sse = SSEPush(app)
    with app.app_context():
        subscription = sse.broker.subscribe(["default"])
    result = app.test_cli_runner().invoke(args=["sse", "publish", "hello"])
    assert result.exit_code == 1
    assert "in-process broker" in result.output
    assert "SSE_PUSH_BROKER_URL" in result.output
    assert "redis://" in result.output
    assert subscription.get(0) == []
    subscription.close()


def test_cli_publish_goes_through_the_app_broker(app: Flask) -> None:
    sse = SSEPush(app, broker=_shared_broker())
    with app.app_context():
        subscription = sse.broker.subscribe(["alerts"])
    result = app.test_cli_runner().invoke(
        args=["sse", "publish", "--channel", "alerts", "--event", "warn", "--id", "a1", "disk"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "a1"
    # The Redis broker's listener hands the event over from its own thread.
    assert subscription.get(5) == [ServerSentEvent("disk", event="warn", id="a1")]
    subscription.close()


def test_cli_publish_rejects_bad_input_clearly(app: Flask) -> None:
    SSEPush(app, broker=_shared_broker())
    result = app.test_cli_runner().invoke(args=["sse", "publish", "--event", "a\nb", "x"])
    assert result.exit_code == 2
    assert "CR, LF or NUL" in result.output
