"""Sources given to ``sse.stream()`` that cannot run, or fail before their first event."""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Flask, current_app

from flask_sse_push import ServerSentEvent, SSEPush
from flask_sse_push.stream import STOP_ID
from flask_sse_push.testing import open_stream

if t.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


async def _async_ticks() -> AsyncIterator[str]:
    yield "tick"


def _ticks() -> Iterator[str]:
    yield "tick"


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        (_async_ticks(), "async def"),
        (_ticks, "Call the generator function"),
        ("tick", "wrap a single event"),
        ({"data": "tick"}, "wrap a single event"),
        (ServerSentEvent("tick"), "wrap a single event"),
        (42, "iterable of events"),
    ],
    ids=["async generator", "generator function", "str", "mapping", "event", "int"],
)
def test_a_source_that_cannot_be_iterated_is_refused_at_call_time(
    app: Flask, source: object, hint: str
) -> None:
    sse = SSEPush(app)
    with app.test_request_context("/ticks"), pytest.raises(TypeError, match=hint) as info:
        sse.stream(source)  # type: ignore[arg-type]
    assert "sse.stream()" in str(info.value)
    if hasattr(source, "aclose"):
        source.aclose().close()  # never started


def test_an_async_generator_never_reaches_the_client(app: Flask) -> None:
    """Before: ``200`` then ``: closed: source error``, and the client came back forever."""
    sse = SSEPush(app)

    @app.get("/ticks")
    def ticks() -> t.Any:
        try:
            return sse.stream(_async_ticks())  # type: ignore[arg-type]
        except TypeError as exc:
            return str(exc), 500

    answer = app.test_client().get("/ticks")
    assert answer.status_code == 500
    assert "async def" in answer.text


def _app_touching_the_database(app: Flask) -> SSEPush:
    sse = SSEPush(app)

    @app.get("/orders/live")
    def orders_live() -> t.Any:
        def orders() -> Iterator[str]:
            # Like a query through Flask-SQLAlchemy: it needs the app context.
            yield str(current_app.config["TESTING"])

        return sse.stream(orders())

    return sse


def test_a_source_failing_before_its_first_event_stops_the_client(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    _app_touching_the_database(app)
    client = app.test_client()
    with caplog.at_level(logging.ERROR, "flask_sse_push"):
        with open_stream(client, "/orders/live") as stream:
            assert stream.read_to_end(timeout=5) == []
            # An id: line with no data: what EventSource sends back on its reconnect.
            assert stream.parser._id == STOP_ID
        again = client.get("/orders/live", headers={"Last-Event-ID": STOP_ID})
    assert again.status_code == 204
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1
    assert "Working outside of application context" in caplog.text


def test_a_source_failing_after_an_event_lets_the_client_resume(app: Flask) -> None:
    sse = SSEPush(app)

    @app.get("/feed")
    def feed() -> t.Any:
        def items() -> Iterator[str]:
            yield "first"
            raise RuntimeError("lost the upstream")

        return sse.stream(items())

    with open_stream(app.test_client(), "/feed") as stream:
        assert [event.data for event in stream.read_to_end(timeout=5)] == ["first"]
        assert stream.parser._id != STOP_ID
        assert stream.parser.comments[-1] == "closed: source error"
        assert stream.parser._retry is not None


def test_the_documented_app_context_lets_a_source_read_the_app(app: Flask) -> None:
    """docs/publishing.md: capture the app in the view, push its context in the source."""
    sse = SSEPush(app)

    @app.get("/orders/live")
    def orders_live() -> t.Any:
        flask_app = current_app._get_current_object()  # type: ignore[attr-defined]

        def orders() -> Iterator[str]:
            with flask_app.app_context():
                yield str(current_app.config["TESTING"])

        return sse.stream(orders())

    with open_stream(app.test_client(), "/orders/live") as stream:
        assert stream.next_event(timeout=5).data == "True"
