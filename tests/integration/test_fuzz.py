"""Hypothesis against the stream endpoint and publish(): bad input gets a clear
4xx or exception, never a 5xx, never bytes that parse as a different event.

Most of it runs in-process through Werkzeug; one smaller run goes through a real
gunicorn. The parser is httpx-sse's, independent of the package.
"""

from __future__ import annotations

import json
import re
import socket
import typing as t
from urllib.parse import quote_from_bytes

import pytest
from flask import Flask
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder, TestResponse

from flask_sse_push import MemoryBroker, ServerSentEvent, SSEPush
from flask_sse_push.runtime import get_runtime
from flask_sse_push.stream import STOP_ID
from tests.apps.lifecycle_app import environment
from tests.support.servers import Gunicorn, gunicorn

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from httpx_sse import ServerSentEvent as Parsed

#: Printable ASCII without the characters that end an HTTP header line.
HEADER_BYTES = st.binary(max_size=400).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def _parse(wire: bytes) -> list[Parsed]:
    """Every block httpx-sse dispatches from ``wire``, keepalive comments left out."""
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    found = []
    for line in [*lines.decode(wire.decode("utf-8")), *lines.flush()]:
        parsed = decoder.decode(line)
        if parsed is not None:
            found.append(parsed)
    return found


def _app() -> tuple[Flask, SSEPush, list[str]]:
    app = Flask(__name__)
    app.config.update(TESTING=True, SSE_PUSH_KEEPALIVE=0.01, SSE_PUSH_HISTORY=5)
    sse = SSEPush(app, broker=MemoryBroker(history=5))

    @sse.authorize
    def no_secrets(channel: str) -> bool:
        return channel != "secret"

    with app.app_context():
        ids = [sse.publish(f"old {n}", channel=name) for n in range(3) for name in ("a", "b")]
    return app, sse, ids


@pytest.fixture(scope="module")
def fuzz_app() -> tuple[Flask, SSEPush, list[str]]:
    return _app()


def _cursors(ids: list[str]) -> st.SearchStrategy[bytes]:
    epoch = ids[0].partition("-")[0]
    return st.one_of(
        st.just(STOP_ID.encode()),
        st.sampled_from([i.encode() for i in ids]),
        st.integers(-(10**40), 10**40).map(lambda n: f"{epoch}-{n}".encode()),
        st.integers(-(10**40), 10**40).map(lambda n: str(n).encode()),
        st.sampled_from(
            [
                b"1700000000000-0",  # Redis stream id
                b"0",
                b"-1",
                b"$",
                b"\x00",
                b"a\x00b",
                b"\xff\xfe",
                b"\xc3\x28",  # invalid UTF-8
                "é".encode(),
                "\u2028".encode(),
                STOP_ID.encode(),
                b"9" * 100000,
                b"",
                b" ",
            ]
        ),
        HEADER_BYTES,
    )


def _query(pairs: list[tuple[bytes, bytes]], raw: str) -> str:
    encoded = "&".join(f"{quote_from_bytes(k)}={quote_from_bytes(v)}" for k, v in pairs)
    return f"{encoded}&{raw}" if raw else encoded


KEYS = st.sampled_from([b"channel", b"last_event_id", b"retry", b"x"]) | st.binary(max_size=8)
VALUES = st.one_of(
    st.sampled_from([b"a", b"b", b"secret", b"default", b"a.b:c-d_e", b"x" * 129, b""]),
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=40),
)
#: Mostly valid channel lists, so the deeper answers (403, 204, replay) come up often.
CHANNELS = st.lists(
    st.tuples(st.just(b"channel"), st.sampled_from([b"a", b"b", b"secret", b"default"])),
    min_size=1,
    max_size=3,
)
PAIRS = CHANNELS | st.lists(st.tuples(KEYS, VALUES), max_size=6)
RAW_QUERY = st.sampled_from(["", "%", "%zz", "&&", "=", "channel", "channel=&channel=a", "a=%00"])


def _first_chunks(response: TestResponse, count: int = 2) -> bytes:
    chunks = t.cast("Iterator[bytes]", iter(response.response))
    body = b""
    for _ in range(count):
        try:
            body += next(chunks)
        except StopIteration:
            break
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=PAIRS,
    raw=RAW_QUERY,
    last_event_id=st.none() | st.data(),
    accept=st.none() | HEADER_BYTES,
)
def test_endpoint_answers_every_request_cleanly(
    fuzz_app: tuple[Flask, SSEPush, list[str]],
    pairs: list[tuple[bytes, bytes]],
    raw: str,
    last_event_id: st.DataObject | None,
    accept: bytes | None,
) -> None:
    app, sse, ids = fuzz_app
    headers: list[tuple[str, str]] = []
    if last_event_id is not None:
        # WSGI servers hand header bytes over decoded as latin-1.
        cursor = last_event_id.draw(_cursors(ids))
        headers.append(("Last-Event-ID", cursor.decode("latin-1")))
    if accept is not None:
        headers.append(("Accept", accept.decode("latin-1")))
    builder = EnvironBuilder(path="/events", query_string=_query(pairs, raw), headers=headers)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    response = app.test_client().open(environ)
    event(f"status {response.status_code}")
    try:
        assert response.status_code in (200, 204, 400, 403), response.status_code
        if response.status_code == 200:
            assert response.mimetype == "text/event-stream"
            body = _first_chunks(response)
            assert body.startswith(b": connected\n: keepalive 10\n\n")
            for parsed in _parse(body):
                if parsed.data == "" and parsed.event == "message":
                    # The cursor of a stream opened without one: an id-only
                    # block, which fires no event in a WHATWG client.
                    assert parsed.id in ids, parsed
                    continue
                # Only replayed history or a reset: events this app really sent.
                assert parsed.data.startswith("old ") or parsed.event == "reset"
        elif response.status_code == 204:
            assert response.get_data() == b""
        else:
            text = response.get_data(as_text=True)
            assert response.mimetype == "text/plain"
            assert text.strip() and "Traceback" not in text
            # A cursor never gets an error status (it would stop EventSource).
            assert response.status_code == 403 or "channel name" in text, text
    finally:
        response.close()
    state = get_runtime(app)
    assert state.broker.subscriber_count() == 0 and len(state.registry) == 0


def test_endpoint_still_serves_after_the_fuzzing(
    fuzz_app: tuple[Flask, SSEPush, list[str]],
) -> None:
    app, sse, _ = fuzz_app
    with app.app_context():
        cursor = sse.cursor("a")
    response = app.test_client().get("/events?channel=a")
    assert _first_chunks(response, 1) == f": connected\n: keepalive 10\n\nid: {cursor}\n\n".encode()
    with app.app_context():
        sent = sse.publish("alive", channel="a")
    body = _first_chunks(response, 1)
    response.close()
    assert [(p.data, p.id) for p in _parse(body)] == [("alive", sent)]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
LINE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(["\r", "\n", "\0", " ", ":"]),
    max_size=60,
)
RETRY = st.one_of(
    st.none(),
    st.integers(-5, 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(
    data=LINE_TEXT | JSON,
    event_type=st.none() | LINE_TEXT,
    event_id=st.none() | LINE_TEXT,
    retry=RETRY,
)
def test_publish_sends_exactly_its_event_or_nothing(
    fuzz_app: tuple[Flask, SSEPush, list[str]],
    data: t.Any,
    event_type: str | None,
    event_id: str | None,
    retry: t.Any,
) -> None:
    app, sse, _ = fuzz_app
    subscription = get_runtime(app).broker.subscribe(["fuzz"])
    try:
        with app.app_context():
            try:
                sent = sse.publish(data, event=event_type, id=event_id, retry=retry, channel="fuzz")
            except (TypeError, ValueError) as exc:
                event(f"refused: {type(exc).__name__}")
                assert str(exc), "the error must say what is wrong"
                assert subscription.get(0) == [], "a refused publish must send nothing"
                return
            text = data if isinstance(data, str) else app.json.dumps(data)
        (delivered,) = subscription.get(0)
    finally:
        subscription.close()
    parsed = _parse(delivered.encode())
    assert len(parsed) == 1, delivered.encode()
    (got,) = parsed
    assert got.data == re.sub(r"\r\n|\r", "\n", text)
    assert got.event == (event_type or "message")
    assert got.id == sent
    assert event_id is None or sent == event_id
    assert got.retry == retry


def test_ten_megabytes_of_data_arrive_intact(app: Flask) -> None:
    sse = SSEPush(app)
    payload = ("line\r\nwith \0 and é\r" * 500_000)[: 10 * 1024 * 1024]
    response = app.test_client().get("/events?channel=big")
    chunks = t.cast("Iterator[bytes]", iter(response.response))
    next(chunks)
    with app.app_context():
        sse.publish(payload, event="big", channel="big")
    body = b""
    while not body.endswith(b"\n\n") or len(body) < len(payload):
        body += next(chunks)
    response.close()
    (got,) = [p for p in _parse(body) if p.data]
    assert got.event == "big"
    assert got.data == re.sub(r"\r\n|\r", "\n", payload)


def test_control_characters_cannot_forge_a_second_event() -> None:
    """The classic injection: an event type or id that would start new fields."""
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        ServerSentEvent("x", event="a\n\ndata: forged")
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        ServerSentEvent("x", id="a\n\ndata: forged")
    forged = _parse(ServerSentEvent("ok\n\ndata: forged\nid: 1").encode())
    assert [(p.data, p.id) for p in forged] == [("ok\n\ndata: forged\nid: 1", "")]


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(
        "tests.apps.lifecycle_app:create_app()", env=environment(SSE_PUSH_KEEPALIVE=5.0)
    ) as running:
        yield running


def _status_line(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                break
            head += data
    return head.partition(b"\r\n")[0]


@pytest.mark.integration
@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pairs=PAIRS,
    raw=RAW_QUERY,
    last_event_id=st.none() | HEADER_BYTES,
    user=st.none() | HEADER_BYTES,
    accept=st.none() | HEADER_BYTES,
)
def test_gunicorn_never_answers_5xx(
    server: Gunicorn,
    pairs: list[tuple[bytes, bytes]],
    raw: str,
    last_event_id: bytes | None,
    user: bytes | None,
    accept: bytes | None,
) -> None:
    lines = [f"GET /events?{_query(pairs, raw)} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    for name, value in (("Last-Event-ID", last_event_id), ("X-User", user), ("Accept", accept)):
        if value is not None:
            lines.append(name.encode() + b": " + value)
    status = _status_line(server.port, b"\r\n".join(lines) + b"\r\n\r\n")
    code = int(status.split()[1])
    event(f"status {code}")
    assert code in (200, 204, 400, 403), status


@pytest.mark.integration
@pytest.mark.slow
def test_gunicorn_stays_up_after_the_fuzzing(server: Gunicorn) -> None:
    status = _status_line(server.port, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == b"HTTP/1.1 200 OK"
    assert server.process.poll() is None
    assert "Traceback" not in server.output()
    stats = json.loads(_json_body(server.port, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert stats["subscribers"] == stats["live"]


def _json_body(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(4096)
    return body
