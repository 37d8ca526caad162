""":class:`flask_sse_push.testing.EventStreamParser` is exact.

It must agree with the WHATWG event-stream algorithm (HTML 9.2.6) under every
way of cutting the bytes into pieces, empty pieces included, with the
web-platform-tests ``eventsource/format-*`` vectors, ignore invalid ``retry``
values without ever raising, and scan each character once.
"""

from __future__ import annotations

import re
import typing as t

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_sse_push import testing
from flask_sse_push.testing import EventStreamParser, ReceivedEvent, parse_stream

#: (type, data, lastEventId, retry), the fields a browser exposes.
Dispatched = tuple[str, str, str, "int | None"]


def reference(stream: bytes) -> list[Dispatched]:
    """The spec's algorithm, written out step by step on the whole stream.

    Decode as UTF-8 with replacement, drop one leading BOM, cut lines at CRLF,
    CR or LF (an unterminated last line is never processed), and interpret each
    line as "Interpreting an event stream" says.
    """
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\r":
            lines.append("".join(current))
            current = []
            if index + 1 < len(text) and text[index + 1] == "\n":
                index += 1
        elif char == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    events: list[Dispatched] = []
    data_buffer = ""
    type_buffer = ""
    id_buffer = ""
    last_event_id = ""
    reconnection_time: int | None = None
    for line in lines:
        if line == "":
            last_event_id = id_buffer
            if data_buffer == "":
                type_buffer = ""
                continue
            if data_buffer.endswith("\n"):
                data_buffer = data_buffer[:-1]
            events.append((type_buffer or "message", data_buffer, last_event_id, reconnection_time))
            data_buffer = ""
            type_buffer = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            type_buffer = value
        elif field == "data":
            data_buffer += value + "\n"
        elif field == "id":
            if "\0" not in value:
                id_buffer = value
        elif field == "retry":
            if value and all(c in "0123456789" for c in value):
                number = 0
                for digit in value:
                    number = number * 10 + (ord(digit) - ord("0"))
                reconnection_time = number
    return events


def _fields(events: list[ReceivedEvent]) -> list[Dispatched]:
    return [(e.event, e.data, e.id, e.retry) for e in events]


def _feed(pieces: t.Iterable[bytes]) -> list[Dispatched]:
    parser = EventStreamParser()
    events: list[ReceivedEvent] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    return _fields(events)


TOKENS = st.sampled_from(
    [
        b"data", b"data:", b"data: ", b"id:", b"id: ", b"event:", b"retry:", b"retry: ",
        b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\n\n", b"\r\r",
        b"\xef\xbb\xbf", b"\xef\xbb", "é".encode(), "☀".encode(), "😀".encode(),
        b"\xff", b"\xc3", b"\x00", b"x", b"reset", b"7", b"0", b"12345",
        b"Data:", b"\x0b", b"\x85",
    ]
)  # fmt: skip
STREAMS = st.lists(TOKENS | st.binary(max_size=6), max_size=40).map(b"".join)


@st.composite
def cut(draw: st.DrawFn) -> list[bytes]:
    """A stream cut into pieces at arbitrary offsets, empty pieces included."""
    stream = draw(STREAMS)
    offsets = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    edges = [0, *offsets, len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=3000, deadline=None)
@given(pieces=cut())
def test_any_cut_agrees_with_the_spec_algorithm(pieces: list[bytes]) -> None:
    assert _feed(pieces) == reference(b"".join(pieces))


@settings(max_examples=300, deadline=None)
@given(stream=STREAMS)
def test_byte_at_a_time_with_empty_pieces_between_agrees(stream: bytes) -> None:
    pieces = [piece for byte in stream for piece in (bytes([byte]), b"")]
    assert _feed([b"", *pieces]) == reference(stream)


def test_empty_piece_keeps_a_pending_cr() -> None:
    """CR, an empty piece, then LF is one CRLF, so one event."""
    assert _feed([b"data: a\r", b"", b"\ndata: b\n\n"]) == [("message", "a\nb", "", None)]


def test_character_cut_between_pieces_is_kept() -> None:
    wire = "data: ünïçødé 😀\n\n".encode()
    assert _feed([wire[i : i + 1] for i in range(len(wire))]) == [
        ("message", "ünïçødé 😀", "", None)
    ]


@pytest.mark.parametrize(
    ("pieces", "data"),
    [
        ([b"\xef\xbb\xbfdata: a\n\n"], ["a"]),
        ([b"\xef", b"\xbb", b"", b"\xbfdata: a\n\n"], ["a"]),
        ([b"", b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n"], ["b"]),
        ([b"data: a\n\n", b"\xef\xbb\xbfdata: b\n\ndata: c\n\n"], ["a", "c"]),
    ],
)
def test_bom_is_dropped_only_at_the_start(pieces: list[bytes], data: list[str]) -> None:
    assert [d for _, d, _, _ in _feed(pieces)] == data


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"5" * 5000, int("5" * 4000) * 10**1000 + int("5" * 1000)),
        (b"0" * 6000 + b"42", 42),
        (b"9" * 200_000, None),  # checked below without converting twice
        (b"3000x", 7),
        (b"-1", 7),
        (b"+5", 7),
        (b"1 000", 7),
        (b" 5", 5),  # the one leading space is the separator
        (b"\xd9\xa3", 7),  # ARABIC-INDIC DIGIT THREE: a digit, not an ASCII one
        (b"\xef\xbc\x95", 7),  # FULLWIDTH DIGIT FIVE
        (b"", 7),
        (b"1.5", 7),
    ],
    ids=lambda value: repr(value)[:20] if isinstance(value, bytes) else "",
)
def test_retry_values(value: bytes, expected: int | None) -> None:
    """Only all-ASCII-digit values count; others are ignored, none raise."""
    (event,) = parse_stream(b"retry: 7\nretry:" + value + b"\ndata: x\n\n")
    if expected is None:
        assert event.retry is not None and event.retry > 10**199_999
    else:
        assert event.retry == expected


def test_unterminated_field_line_at_the_end_is_never_processed() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\n\nid: 5") == [ReceivedEvent("message", "a", "", None)]


#: web-platform-tests eventsource/format-* vectors: the stream each test's
#: server sends, and the events it expects (type, data, lastEventId), as the
#: WHATWG algorithm gives them.
WPT_VECTORS: dict[str, tuple[bytes, list[tuple[str, str, str]]]] = {
    "format-bom": (
        b"\xef\xbb\xbfdata:1\n\n\xef\xbb\xbfdata:2\n\ndata:3\n\n",
        [("message", "1", ""), ("message", "3", "")],
    ),
    "format-bom-2": (
        b"\xef\xbb\xbf\xef\xbb\xbfdata:1\n\ndata:2\n\ndata:3\n\n",
        [("message", "2", ""), ("message", "3", "")],
    ),
    "format-comments": (
        b"data:1\r:\x00\n:\r\ndata:2\n:"
        + b"x" * 2049
        + b"\rdata:3\n:data:fail\r:"
        + b"y" * 2049
        + b"\ndata:4\n\n",
        [("message", "1\n2\n3\n4", "")],
    ),  # fmt: skip
    "format-data-before-final-empty-line": (
        b"retry:1000\ndata:test1\n\nid:test\ndata:test2",
        [("message", "test1", "")],
    ),
    "format-field-data": (
        b"data:\n\ndata\ndata\n\ndata:test\n\n",
        [("message", "", ""), ("message", "\n", ""), ("message", "test", "")],
    ),
    "format-field-event": (
        b"event:test\ndata:x\n\ndata:x\n\n",
        [("test", "x", ""), ("message", "x", "")],
    ),
    "format-field-event-empty": (b"event: \ndata:data\n\n", [("message", "data", "")]),
    "format-field-id": (
        b"id: 1\ndata: x\n\nid\ndata: y\n\n",
        [("message", "x", "1"), ("message", "y", "")],
    ),
    "format-field-id-2": (
        b"id:1\n\ndata:a\n\nid:\ndata:b\n\n",
        [("message", "a", "1"), ("message", "b", "")],
    ),
    "format-field-id-3": (b"id:x\x00\nid:ok\x01\ndata:z\n\n", [("message", "z", "ok\x01")]),
    "format-field-id-null": (
        b"id:1\ndata:a\n\nid:2\x003\ndata:b\n\n",
        [("message", "a", "1"), ("message", "b", "1")],
    ),
    "format-field-parsing": (
        b"data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\rdata_5\n"
        b"data:3\rdata:\r\n data:32\ndata:4\n\n",
        [("message", "\x00\n 2\n1\n3\n\n4", "")],
    ),
    "format-field-unknown": (
        b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n",
        [("message", "test\n\ntest", "")],
    ),
    "format-leading-space": (
        b"data:\ttest\rdata: \ndata:test\n\n",
        [("message", "\ttest\n\ntest", "")],
    ),
    "format-newlines": (b"data:test\r\ndata\ndata:test\r\n\r\n", [("message", "test\n\ntest", "")]),
    "format-null-character": (b"data:\x00\n\n\n\n", [("message", "\x00", "")]),
    "format-utf-8": (
        "data:ok…\u2028\u0085\n\n".encode() + b"data:\xff\xfe\xed\xa0\x80\n\n",
        [("message", "ok…\u2028\u0085", ""), ("message", "\ufffd\ufffd\ufffd\ufffd\ufffd", "")],
    ),
}


@pytest.mark.parametrize("name", sorted(WPT_VECTORS))
def test_web_platform_tests_vectors(name: str) -> None:
    wire, expected = WPT_VECTORS[name]
    assert [(k, d, i) for k, d, i, _ in _feed([wire])] == expected
    # ...and the same cut one byte at a time, and by the reference.
    assert [(k, d, i) for k, d, i, _ in _feed([bytes([b]) for b in wire])] == expected
    assert [(k, d, i) for k, d, i, _ in reference(wire)] == expected


def test_retry_vectors() -> None:
    """format-field-retry, -bogus and -empty: the reconnection time seen after each."""
    assert parse_stream(b"retry:03000\ndata:x\n\n")[0].retry == 3000
    assert parse_stream(b"retry:3000\nretry:1000x\ndata:x\n\n")[0].retry == 3000
    assert parse_stream(b"retry\ndata:test\n\n")[0].retry is None


class _CountingPattern:
    """Stands in for the parser's line-end regex and counts the characters it scans."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def finditer(self, text: str, pos: int = 0) -> t.Iterator[re.Match[str]]:
        self.scanned += len(text) - pos
        return self.pattern.finditer(text, pos)


@pytest.mark.parametrize(
    ("pieces", "events"),
    [
        # One event of 200,000 lines, 1 MiB of short events.
        ([b"data: x\n" * 200_000 + b"\n"], 1),
        ([b"data: ab\n\n" * 104_858], 104_858),
        # A 2 MB line arriving in 64 KiB pieces.
        ([b"data: " + b"z" * 65536 for _ in range(32)] + [b"\n\n"], 1),
    ],
)
def test_each_character_is_scanned_once(
    monkeypatch: pytest.MonkeyPatch, pieces: list[bytes], events: int
) -> None:
    """Linear time, checked by counting work rather than timing it: the old
    parser re-searched and re-copied what was left of its buffer after every
    line. (bench/parser.py times it.)"""
    counter = _CountingPattern(testing.LINE_END)
    monkeypatch.setattr(testing, "LINE_END", counter)
    found = _feed(pieces)
    assert len(found) == events
    assert counter.scanned <= sum(len(piece) for piece in pieces)


@pytest.mark.timeout(20)
def test_two_megabytes_of_lines_parse_in_one_pass() -> None:
    """A regression guard only: the old parser took about 25 s for this."""
    (event,) = parse_stream(b"data: 0123456789\n" * 200_000 + b"\n")
    assert len(event.data) == 200_000 * 11 - 1
