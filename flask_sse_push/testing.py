"""Helpers to test an app's event streams without writing an SSE parser.

.. code-block:: python

    from flask_sse_push.testing import open_stream

    def test_order_created_is_pushed(app, client):
        with open_stream(client, channels=["orders"]) as stream:
            client.post("/orders", json={"item": "tea"})
            event = stream.next_event(timeout=2)
        assert event.event == "created"

With the pytest plugin (``pytest -p flask_sse_push.testing``, or
``pytest_plugins = ["flask_sse_push.testing"]`` in ``conftest.py``), the
``sse_stream`` fixture opens streams on your ``app`` fixture's test client and
closes them after the test. This module itself needs no pytest: the helpers
work with any test runner.

.. versionadded:: 0.1
"""

from __future__ import annotations

import codecs
import dataclasses
import queue
import re
import threading
import time
import typing as t
from urllib.parse import urlencode

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

__all__ = [
    "EventStreamParser",
    "ReceivedEvent",
    "TestStream",
    "open_stream",
    "parse_stream",
]


@dataclasses.dataclass(frozen=True)
class ReceivedEvent:
    """An event as a browser's ``EventSource`` delivers it.

    :param event: the type (``"message"`` when the block named none).
    :param data: the data lines joined with LF.
    :param id: the ``lastEventId`` after this event: it persists across events
        that carry no id, as in the browser.
    :param retry: the reconnection time the stream set so far, if any.

    .. versionadded:: 0.1
    """

    event: str
    data: str
    id: str
    retry: int | None = None


class EventStreamParser:
    """An incremental parser of the event-stream format (WHATWG HTML 9.2.6).

    Feed it bytes cut in any way, empty pieces included; it returns the events
    completed so far, exactly as a browser's ``EventSource`` dispatches them:
    UTF-8 decoded with replacement characters, one leading BOM dropped, CRLF,
    CR and LF all ending a line (also when a CRLF is cut between two pieces),
    ``id`` values holding NUL and ``retry`` values that are not all ASCII
    digits ignored. Time and memory are linear in the bytes fed.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        # utf-8-sig drops one BOM at the very start of the stream only, even if
        # it is cut between pieces, and keeps a character cut between pieces.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        #: The pieces of the line read so far; joined once, when the line ends.
        self._line_parts: list[str] = []
        self._data: list[str] = []
        self._type = ""
        self._id = ""
        self._last_id = ""
        self._retry: int | None = None
        #: The last text ended with CR: an LF that starts the next text is the
        #: rest of that CRLF, not an empty line.
        self._pending_cr = False
        self.comments: list[str] = []

    def feed(self, chunk: bytes) -> list[ReceivedEvent]:
        """Consume ``chunk`` and return the events it completed."""
        text = self._decoder.decode(chunk)
        if not text:
            # Nothing decoded (an empty piece, or part of a character): the
            # pending CR still waits for what comes next.
            return []
        start = 0
        if self._pending_cr and text[0] == "\n":
            start = 1
        self._pending_cr = False
        events: list[ReceivedEvent] = []
        parts = self._line_parts
        for match in LINE_END.finditer(text, start):
            parts.append(text[start : match.start()])
            line = parts[0] if len(parts) == 1 else "".join(parts)
            parts.clear()
            start = match.end()
            event = self._line(line)
            if event is not None:
                events.append(event)
        if start < len(text):
            parts.append(text[start:])
        elif text[-1] == "\r":
            self._pending_cr = True
        return events

    def _line(self, line: str) -> ReceivedEvent | None:
        if line == "":
            self._last_id = self._id
            data, kind = self._data, self._type
            self._data, self._type = [], ""
            if not data:
                return None
            return ReceivedEvent(kind or "message", "\n".join(data), self._last_id, self._retry)
        if line[0] == ":":
            self.comments.append(line[1:].removeprefix(" "))
            return None
        # A line without a colon is a field name with an empty value.
        name, _, value = line.partition(":")
        self._field(name, value.removeprefix(" "))
        return None

    def _field(self, name: str, value: str) -> None:
        """Process one field line; unknown field names are ignored, as the spec says."""
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            retry = _retry_value(value)
            if retry is not None:
                self._retry = retry


#: The three line endings of the event-stream grammar; CRLF first, so it is one.
LINE_END = re.compile(r"\r\n|\r|\n")

_ASCII_DIGITS = re.compile(r"[0-9]+")


def _retry_value(value: str) -> int | None:
    """The spec's reading of a ``retry`` value: all ASCII digits, else ignored."""
    if _ASCII_DIGITS.fullmatch(value) is None:
        return None
    return _decimal(value.lstrip("0") or "0", {})


def _decimal(digits: str, powers: dict[int, int]) -> int:
    """``int(digits)`` for any length: int() refuses more than 4,300 digits by
    default (``sys.set_int_max_str_digits``), and converts in quadratic time, so
    long values are split in halves, which Karatsuba multiplication joins."""
    if len(digits) <= 3000:
        return int(digits)
    half = len(digits) // 2
    scale = powers.get(half)
    if scale is None:
        scale = powers[half] = 10**half
    return _decimal(digits[:-half], powers) * scale + _decimal(digits[-half:], powers)


def parse_stream(body: bytes) -> list[ReceivedEvent]:
    """Parse a complete body; an unterminated last event is dropped, as at EOF.

    .. versionadded:: 0.1
    """
    return EventStreamParser().feed(body)


_EOF = object()


class TestStream:
    """An open stream on a Flask test client, read in the background.

    Use :func:`open_stream` to make one, and close it (or use ``with``).

    .. versionadded:: 0.1
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, response: TestResponse) -> None:
        self.response = response
        self.status_code = response.status_code
        self.headers = response.headers
        self.parser = EventStreamParser()
        self._chunks: queue.Queue[object] = queue.Queue()
        self._pending: list[ReceivedEvent] = []
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for chunk in t.cast("Iterable[bytes]", self.response.response):
                self._chunks.put(chunk)
        finally:
            self._chunks.put(_EOF)

    def _pull(self, timeout: float) -> bool:
        """Wait for one chunk; return False on timeout or end of stream."""
        if self._ended:
            return False
        try:
            chunk = self._chunks.get(timeout=timeout)
        except queue.Empty:
            return False
        if chunk is _EOF:
            self._ended = True
            return False
        assert isinstance(chunk, bytes)
        self._pending.extend(self.parser.feed(chunk))
        return True

    def next_event(self, timeout: float = 5.0) -> ReceivedEvent:
        """Return the next event, waiting up to ``timeout`` seconds.

        :raises AssertionError: no event arrived in time, or the stream ended.
        """
        deadline = time.monotonic() + timeout
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not self._pull(left):
                if self._ended:
                    raise AssertionError("the stream ended before another event arrived")
                if time.monotonic() >= deadline:
                    raise AssertionError(f"no event arrived within {timeout} s")
        return self._pending.pop(0)

    def events(self, count: int, timeout: float = 5.0) -> list[ReceivedEvent]:
        """Return the next ``count`` events, waiting up to ``timeout`` in all."""
        deadline = time.monotonic() + timeout
        return [self.next_event(max(0.0, deadline - time.monotonic())) for _ in range(count)]

    def assert_no_event(self, within: float = 0.2) -> None:
        """Assert that no event arrives for ``within`` seconds."""
        deadline = time.monotonic() + within
        while not self._pending and (left := deadline - time.monotonic()) > 0:
            if not self._pull(left) and self._ended:
                break
        assert not self._pending, f"unexpected event {self._pending[0]!r}"

    def read_to_end(self, timeout: float = 5.0) -> list[ReceivedEvent]:
        """Return every remaining event once the server ends the stream."""
        deadline = time.monotonic() + timeout
        while not self._ended:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the stream did not end within {timeout} s")
            self._pull(left)
        events, self._pending = self._pending, []
        return events

    def close(self) -> None:
        """Disconnect, as a browser does when the page goes away."""
        self.response.close()
        self._reader.join(5)

    def __enter__(self) -> TestStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(
    client: FlaskClient,
    path: str = "/events",
    *,
    channels: Sequence[str] = (),
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> TestStream:
    """Open ``path`` on ``client`` as an ``EventSource`` would.

    :param channels: added as ``?channel=`` parameters.
    :param last_event_id: sent as the ``Last-Event-ID`` header.
    :raises AssertionError: the answer is not a stream (``403`` from an
        ``authorize`` hook, ``400``, ``204``...); the message gives the status
        and body. The transient answer (``200``, ``retry:``, end) is a stream.

    .. versionadded:: 0.1
    """
    query = urlencode([("channel", name) for name in channels])
    url = f"{path}?{query}" if query else path
    sent = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id is not None:
        sent["Last-Event-ID"] = last_event_id
    response = client.get(url, headers=sent, buffered=False)
    if response.status_code != 200 or not response.mimetype == "text/event-stream":
        body = response.get_data(as_text=True).strip()
        response.close()
        raise AssertionError(
            f"{url} was not opened as a stream: {response.status}"
            + (f", {body!r}" if body else "")
            + ". EventSource does not retry such an answer. To test a refusal, assert on"
            " client.get(url) instead."
        )
    return TestStream(response)


#: ``-p flask_sse_push.testing`` registers this module with pytest, which then
#: loads the ``sse_stream`` fixture from :mod:`flask_sse_push.pytest_plugin`. The
#: fixture lives apart so that this module imports without pytest installed.
pytest_plugins = ["flask_sse_push.pytest_plugin"]
