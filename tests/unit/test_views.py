"""The stream endpoint through the Flask test client: headers, keepalives,
delivery per channel, replay from ``Last-Event-ID``, bad input, application
generators, and release on close.
"""

from __future__ import annotations

import threading
import time
import typing as t

import pytest
from flask import Flask, Response
from werkzeug.test import TestResponse

from flask_sse_push import (
    MemoryBroker,
    ServerSentEvent,
    SSEPush,
)
from tests.support.unreachable import UnreachableBroker
from tests.support.wire import parse

if t.TYPE_CHECKING:
    from collections.abc import Iterator


def _chunks(response: TestResponse) -> Iterator[bytes]:
    return t.cast("Iterator[bytes]", iter(response.response))


def _events_until(chunks: Iterator[bytes], count: int) -> bytes:
    """Read chunks until ``count`` events (not comments) have arrived."""
    body = b""
    for _ in range(1000):
        body += next(chunks)
        if len(parse(body).events) >= count:
            return body
    raise AssertionError(f"fewer than {count} events in {body!r}")


class TestHeaders:
    def test_stream_headers(self, app: Flask, sse: SSEPush) -> None:
        """SSE content type, no caching, no proxy buffering, and no Connection."""
        response = app.test_client().get("/events")
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Connection" not in response.headers
        assert "Content-Length" not in response.headers
        response.close()

    def test_first_chunk_comes_before_any_event(self, app: Flask, sse: SSEPush) -> None:
        """onopen fires at once, without waiting for a publish; the chunk tells the
        keepalive interval in milliseconds, in a comment, and the cursor of now."""
        with app.app_context():
            sse.publish("before")
            cursor = sse.cursor("default")
        response = app.test_client().get("/events")
        assert (
            next(_chunks(response)) == f": connected\n: keepalive 50\n\nid: {cursor}\n\n".encode()
        )
        response.close()

    def test_first_chunk_carries_retry_when_configured(self, app: Flask) -> None:
        app.config.update(SSE_PUSH_RETRY=2500, SSE_PUSH_KEEPALIVE=15.0)
        sse = SSEPush(app)
        with app.app_context():
            cursor = sse.cursor("default")
        response = app.test_client().get("/events")
        assert (
            next(_chunks(response))
            == f"retry: 2500\n: keepalive 15000\n\nid: {cursor}\n\n".encode()
        )
        response.close()

    def test_a_resumed_stream_keeps_the_cursor_it_came_with(self, app: Flask, sse: SSEPush) -> None:
        with app.app_context():
            cursor = sse.publish("before")
        response = app.test_client().get("/events", headers={"Last-Event-ID": cursor})
        assert next(_chunks(response)) == b": connected\n: keepalive 50\n\n"
        response.close()


class TestStreaming:
    def test_keepalive_comment_when_idle(self, app: Flask, sse: SSEPush) -> None:
        response = app.test_client().get("/events")
        chunks = _chunks(response)
        next(chunks)
        assert next(chunks) == b": keepalive\n\n"
        response.close()

    def test_keepalive_timer_restarts_after_an_event(self, app: Flask) -> None:
        """Events more frequent than the keepalive interval leave no room for one."""
        app.config["SSE_PUSH_KEEPALIVE"] = 1.0
        sse = SSEPush(app)
        with app.app_context():
            broker = sse.broker
        response = app.test_client().get("/events")
        chunks = _chunks(response)
        next(chunks)
        stop = threading.Event()

        def publish() -> None:
            for n in range(200):
                if stop.wait(0.05):
                    return
                broker.publish("default", ServerSentEvent(str(n)))

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            received = [next(chunks) for _ in range(20)]
        finally:
            stop.set()
            publisher.join()
        assert b": keepalive\n\n" not in received
        response.close()

    def test_published_events_arrive_on_their_channels_only(self, app: Flask, sse: SSEPush) -> None:
        """One connection may listen to several channels."""
        response = app.test_client().get("/events?channel=a&channel=b")
        chunks = _chunks(response)
        next(chunks)
        sse.publish("to a", channel="a")
        sse.publish("to c", channel="c")
        sse.publish("to b", channel="b", event="note")
        events = parse(_events_until(chunks, 2)).events
        assert [(e.type, e.data) for e in events] == [("message", "to a"), ("note", "to b")]
        response.close()

    def test_closing_the_response_releases_the_subscription(self, app: Flask) -> None:
        """200 streams opened and closed leave the broker with no subscribers."""
        app.config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"] = 1000  # all from one test client
        SSEPush(app)
        sse = app.extensions["sse_push"]
        client = app.test_client()
        responses = [client.get(f"/events?channel=c{n % 7}") for n in range(200)]
        for response in responses:
            next(_chunks(response))
        assert sse.broker.subscriber_count() == 200
        for response in responses:
            response.close()
        assert sse.broker.subscriber_count() == 0

    def test_response_closed_before_its_first_chunk_still_releases(
        self, app: Flask, sse: SSEPush
    ) -> None:
        """A generator that never started never runs its finally; call_on_close does."""
        response = app.test_client().get("/events")
        assert sse.broker.subscriber_count() == 1
        response.close()
        assert sse.broker.subscriber_count() == 0


class TestReplay:
    def test_last_event_id_header_replays_the_rest_then_live(
        self, app: Flask, sse: SSEPush
    ) -> None:
        ids = [sse.publish(f"old {n}") for n in range(5)]
        response = app.test_client().get("/events", headers={"Last-Event-ID": ids[1]})
        chunks = _chunks(response)
        replayed = parse(_events_until(chunks, 3)).events
        assert [e.last_event_id for e in replayed] == ids[2:]
        live = sse.publish("new")
        assert parse(_events_until(chunks, 1)).events[0].last_event_id == live
        response.close()

    def test_query_cursor_is_used_on_first_connect(self, app: Flask, sse: SSEPush) -> None:
        """?last_event_id= covers the gap between page load and connect."""
        cursor = sse.cursor()
        missed = sse.publish("published before the connection")
        response = app.test_client().get(f"/events?last_event_id={cursor}")
        events = parse(_events_until(_chunks(response), 1)).events
        assert [e.last_event_id for e in events] == [missed]
        response.close()

    def test_header_wins_over_query_cursor(self, app: Flask, sse: SSEPush) -> None:
        """The query string keeps its first value; the header is the newer cursor."""
        first = sse.publish("1")
        second = sse.publish("2")
        third = sse.publish("3")
        response = app.test_client().get(
            f"/events?last_event_id={first}", headers={"Last-Event-ID": second}
        )
        events = parse(_events_until(_chunks(response), 1)).events
        assert [e.last_event_id for e in events] == [third]
        response.close()

    def test_unknown_cursor_gets_reset_first(self, app: Flask, sse: SSEPush) -> None:
        head = sse.publish("x")
        response = app.test_client().get("/events", headers={"Last-Event-ID": "nope"})
        (reset,) = parse(_events_until(_chunks(response), 1)).events
        assert (reset.type, reset.last_event_id) == ("reset", head)
        response.close()

    def test_utf8_header_cursor_is_decoded(self, app: Flask, sse: SSEPush) -> None:
        sse.publish("1", id="café")
        after = sse.publish("2")
        raw = "café".encode().decode("latin-1")
        response = app.test_client().get("/events", headers={"Last-Event-ID": raw})
        events = parse(_events_until(_chunks(response), 1)).events
        assert [e.last_event_id for e in events] == [after]
        response.close()


class TestBadInput:
    @pytest.mark.parametrize(
        "query",
        ["channel=", "channel=a%20b", "channel=" + "x" * 129, "channel=a&channel=%00", "channel=é"],
    )
    def test_bad_channel_is_400_with_reason(self, app: Flask, sse: SSEPush, query: str) -> None:
        response = app.test_client().get(f"/events?{query}")
        assert response.status_code == 400
        assert response.mimetype == "text/plain"
        assert "channel name" in response.get_data(as_text=True)

    def test_unreachable_broker_gives_200_with_retry_then_end(self, app: Flask) -> None:
        """Never a 5xx: EventSource would give up for good."""
        SSEPush(app, broker=UnreachableBroker())
        response = app.test_client().get("/events")
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        stream = parse(response.get_data())
        assert stream.retry is not None and stream.events == []


class TestUserGenerator:
    def _app(self, app: Flask, source: t.Callable[[], t.Iterable[t.Any]]) -> Flask:
        sse = SSEPush(app, broker=MemoryBroker())

        @app.get("/gen")
        def gen() -> Response:
            return sse.stream(source())

        return app

    def test_items_of_each_kind_are_encoded(self, app: Flask) -> None:
        def source() -> Iterator[t.Any]:
            yield ServerSentEvent("a", id="1")
            yield "plain"
            yield {"data": {"k": [1]}, "event": "obj", "id": "3", "retry": 10}

        response = self._app(app, source).test_client().get("/gen")
        stream = parse(response.get_data())
        assert [(e.type, e.data, e.last_event_id) for e in stream.events] == [
            ("message", "a", "1"),
            ("message", "plain", "1"),
            ("obj", '{"k": [1]}', "3"),
        ]
        assert stream.retry == 10

    def test_blocking_generator_does_not_stop_keepalives(self, app: Flask) -> None:
        release = threading.Event()

        def source() -> Iterator[str]:
            release.wait(10)
            yield "finally"

        response = self._app(app, source).test_client().get("/gen")
        chunks = _chunks(response)
        assert next(chunks) == b": connected\n: keepalive 50\n\n"
        assert next(chunks) == b": keepalive\n\n"
        assert next(chunks) == b": keepalive\n\n"
        release.set()
        assert parse(_events_until(chunks, 1)).events[0].data == "finally"
        response.close()

    def test_generator_is_closed_when_the_client_leaves(self, app: Flask) -> None:
        closed = threading.Event()

        def source() -> Iterator[str]:
            try:
                while True:
                    yield "tick"
                    time.sleep(0.01)
            finally:
                closed.set()

        response = self._app(app, source).test_client().get("/gen")
        chunks = _chunks(response)
        _events_until(chunks, 1)
        response.close()
        assert closed.wait(5)

    def test_failing_generator_ends_the_stream_with_a_retry_hint(self, app: Flask) -> None:
        def source() -> Iterator[str]:
            yield "before"
            raise RuntimeError("boom")

        app.config["SSE_PUSH_RETRY"] = 700
        response = self._app(app, source).test_client().get("/gen")
        assert response.status_code == 200
        body = response.get_data()
        assert [e.data for e in parse(body).events] == ["before"]
        assert body.endswith(b"retry: 700\n\n")

    def test_bad_item_ends_the_stream_instead_of_corrupting_it(self, app: Flask) -> None:
        def source() -> Iterator[t.Any]:
            yield "ok"
            yield {"data": "x", "id": "bad\nid"}
            yield "never"

        response = self._app(app, source).test_client().get("/gen")
        assert [e.data for e in parse(response.get_data()).events] == ["ok"]
