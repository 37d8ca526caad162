""":mod:`flask_sse_push.testing`: its parser agrees with the spec however the bytes
are split, and its stream helpers read, time out, resume and release.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask, Response
from hypothesis import given
from hypothesis import strategies as st

from flask_sse_push import SSEPush
from flask_sse_push.stream import STOP_ID
from flask_sse_push.testing import (
    EventStreamParser,
    ReceivedEvent,
    TestStream,
    open_stream,
    parse_stream,
)
from tests.support.wire import parse

if t.TYPE_CHECKING:
    from collections.abc import Callable


_line = st.sampled_from(
    ["data: a", "data:b", "data", "event: t", "id: 7", "id: x\0", "retry: 12", "retry: x",
     ": c", "", "", "data:  sp", "field: v", "\ufeffdata: bom"]
)  # fmt: skip
_ending = st.sampled_from(["\n", "\r", "\r\n"])


class TestParser:
    @given(
        lines=st.lists(st.tuples(_line, _ending), max_size=30),
        cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    )
    def test_incremental_parser_matches_the_reference_however_split(
        self, lines: list[tuple[str, str]], cuts: list[int]
    ) -> None:
        """Fed in arbitrary pieces (CRLF and UTF-8 split too), it agrees with the
        spec parser in tests/support/wire.py."""
        body = "".join(line + ending for line, ending in lines).encode()
        points = sorted({min(cut, len(body)) for cut in cuts} | {0, len(body)})
        parser = EventStreamParser()
        got: list[ReceivedEvent] = []
        for start, end in zip(points, points[1:], strict=False):
            got.extend(parser.feed(body[start:end]))
        expected = parse(body)
        assert [(e.event, e.data, e.id) for e in got] == [
            (e.type, e.data, e.last_event_id) for e in expected.events
        ]

    def test_multibyte_character_split_across_chunks(self) -> None:
        body = "data: 结束\n\n".encode()
        parser = EventStreamParser()
        assert parser.feed(body[:8]) == []
        assert parser.feed(body[8:]) == [ReceivedEvent("message", "结束", "")]

    def test_unterminated_event_is_dropped(self) -> None:
        assert parse_stream(b"data: a\n\ndata: b\n") == [ReceivedEvent("message", "a", "")]


@pytest.fixture
def sse(app: Flask) -> SSEPush:
    extension = SSEPush(app)

    @app.get("/finite")
    def finite() -> Response:
        return extension.stream(iter(["one", "two"]))

    return extension


class TestStreams:
    def test_next_event_and_publish(self, app: Flask, sse: SSEPush) -> None:
        with open_stream(app.test_client(), channels=["a", "b"]) as stream:
            assert stream.status_code == 200
            with app.app_context():
                sent = sse.publish({"n": 1}, event="e", channel="b")
            assert stream.next_event(2) == ReceivedEvent("e", '{"n": 1}', sent)

    def test_timeout_and_no_event(self, app: Flask, sse: SSEPush) -> None:
        with open_stream(app.test_client()) as stream:
            stream.assert_no_event(0.1)
            with pytest.raises(AssertionError, match="no event arrived within"):
                stream.next_event(0.1)

    def test_assert_no_event_fails_when_one_arrives(self, app: Flask, sse: SSEPush) -> None:
        with open_stream(app.test_client()) as stream:
            with app.app_context():
                sse.publish("surprise")
            with pytest.raises(AssertionError, match="surprise"):
                stream.assert_no_event(1.0)

    def test_read_to_end_of_a_finite_stream(self, app: Flask, sse: SSEPush) -> None:
        with open_stream(app.test_client(), "/finite") as stream:
            assert [e.data for e in stream.read_to_end()] == ["one", "two"]
            with pytest.raises(AssertionError, match="ended"):
                stream.next_event(0.5)

    def test_resume_with_last_event_id(self, app: Flask, sse: SSEPush) -> None:
        with app.app_context():
            first = sse.publish("1")
            sse.publish("2")
        with open_stream(app.test_client(), last_event_id=first) as stream:
            assert stream.next_event().data == "2"

    def test_close_releases_the_subscription_even_while_blocked(
        self, app: Flask, sse: SSEPush
    ) -> None:
        """Closing from the test thread wakes the reader blocked in the server."""
        app.config["SSE_PUSH_KEEPALIVE"] = 60.0
        stream = open_stream(app.test_client())
        stream.assert_no_event(0.1)
        stream.close()
        with app.app_context():
            assert sse.broker.subscriber_count() == 0


def test_sse_stream_fixture(
    app: Flask, sse: SSEPush, sse_stream: Callable[..., TestStream]
) -> None:
    stream = sse_stream(channels=["news"])
    with app.app_context():
        sse.publish("headline", channel="news")
    assert stream.next_event().data == "headline"


def test_open_stream_on_a_refused_channel_raises_with_the_status(app: Flask) -> None:
    """Before, it opened without complaint, and the test saw only "the stream ended"."""
    sse = SSEPush(app)

    @sse.authorize
    def may_listen(channel: str) -> bool:
        return channel != "secret"

    with pytest.raises(AssertionError, match="403 FORBIDDEN.*'secret'"):
        open_stream(app.test_client(), channels=["secret"])
    with pytest.raises(AssertionError, match="204 NO CONTENT"):
        open_stream(app.test_client(), last_event_id=STOP_ID)
    with open_stream(app.test_client(), channels=["public"]) as stream:
        assert stream.status_code == 200
