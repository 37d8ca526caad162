"""Events encode to the exact bytes of the event-stream format, comments cannot start
a field, and what is encoded reads back unchanged through a spec parser and httpx-sse.
"""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import EventSource
from hypothesis import example, given
from hypothesis import strategies as st

from flask_sse_push import ServerSentEvent
from flask_sse_push.encoding import encode_comment, encode_retry, split_lines
from tests.support.wire import parse


class TestEncodeEvent:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            (ServerSentEvent("hi"), b"data: hi\n\n"),
            (ServerSentEvent(""), b"data:\n\n"),
            (ServerSentEvent("a\nb"), b"data: a\ndata: b\n\n"),
            (ServerSentEvent("a\r\nb\rc"), b"data: a\ndata: b\ndata: c\n\n"),
            (ServerSentEvent("a\n"), b"data: a\ndata:\n\n"),
            (ServerSentEvent(" lead"), b"data:  lead\n\n"),
            (ServerSentEvent("x\u2028y\x85z\x0c"), "data: x\u2028y\x85z\x0c\n\n".encode()),
            (ServerSentEvent("a\0b"), b"data: a\0b\n\n"),
            (ServerSentEvent("d", event="update"), b"event: update\ndata: d\n\n"),
            (ServerSentEvent("d", id="7"), b"id: 7\ndata: d\n\n"),
            (ServerSentEvent("d", id=""), b"id: \ndata: d\n\n"),
            (ServerSentEvent("d", retry=0), b"retry: 0\ndata: d\n\n"),
            (
                ServerSentEvent("结束", event="end", id="9999", retry=10),
                "event: end\nid: 9999\nretry: 10\ndata: 结束\n\n".encode(),
            ),
        ],
    )
    def test_exact_bytes(self, event: ServerSentEvent, expected: bytes) -> None:
        """Each input gives exactly these bytes: LF only, `name: value`, blank line."""
        assert event.encode() == expected

    def test_unicode_line_separators_are_not_line_breaks(self) -> None:
        """str.splitlines() would split here; SSE must not."""
        text = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg"
        assert split_lines(text) == [text]
        assert parse(ServerSentEvent(text).encode()).events[0].data == text


class TestComments:
    def test_comment_lines_cannot_start_a_field(self) -> None:
        """Every line of a multi-line comment stays a comment."""
        assert encode_comment("a\ndata: evil") == ": a\n: data: evil\n\n"
        assert parse(encode_comment("a\ndata: evil").encode()).events == []

    def test_empty_comment(self) -> None:
        assert encode_comment() == ":\n\n"

    def test_retry_block_sets_retry_only(self) -> None:
        stream = parse(encode_retry(1500).encode())
        assert (stream.retry, stream.events) == (1500, [])


_no_breaks = st.text().filter(lambda s: not any(c in s for c in "\r\n\0"))


def _normalized(data: str) -> str:
    return data.replace("\r\n", "\n").replace("\r", "\n")


class TestRoundTrip:
    @given(
        data=st.text(),
        event=st.none() | _no_breaks,
        event_id=st.none() | _no_breaks,
        retry=st.none() | st.integers(min_value=0, max_value=2**53),
    )
    @example(data="\r\n\r", event=None, event_id=None, retry=None)
    @example(data=" \0\u2028 ", event=" ", event_id=" x", retry=0)
    @example(data="", event="", event_id="", retry=None)
    def test_spec_parser_reads_back_what_was_published(
        self, data: str, event: str | None, event_id: str | None, retry: int | None
    ) -> None:
        """Our bytes, read by a parser written from the spec, give back the event."""
        stream = parse(ServerSentEvent(data, event=event, id=event_id, retry=retry).encode())
        assert len(stream.events) == 1
        parsed = stream.events[0]
        assert parsed.data == _normalized(data)
        assert parsed.type == (event or "message")
        assert parsed.last_event_id == (event_id or "")
        assert stream.retry == retry

    @given(
        events=st.lists(
            st.builds(
                ServerSentEvent,
                data=st.text(),
                event=st.none() | _no_breaks.filter(bool),
                id=st.none() | _no_breaks.filter(bool),
            ),
            max_size=5,
        ),
        chunk=st.integers(min_value=1, max_value=7),
    )
    def test_httpx_sse_reads_back_a_chunked_stream(
        self, events: list[ServerSentEvent], chunk: int
    ) -> None:
        """httpx-sse, a second independent decoder, agrees event for event,
        however the bytes are split into network chunks."""
        body = b"".join(event.encode() for event in events)
        pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        response = httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=iter(pieces),
        )
        decoded = list(EventSource(response).iter_sse())
        assert [(e.event, e.data) for e in decoded] == [
            (event.event or "message", _normalized(event.data)) for event in events
        ]
        last_ids: list[str] = []
        current = ""
        for event in events:
            current = event.id if event.id is not None else current
            last_ids.append(current)
        assert [e.id for e in decoded] == last_ids
