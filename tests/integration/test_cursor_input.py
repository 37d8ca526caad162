"""A resume cursor never kills the client, on the in-memory broker and on a real
redis-server.

No ``Last-Event-ID`` value (header or ``?last_event_id=``) gets an answer other
than ``200``: a value that matches nothing gets a ``reset`` event and the live
stream, and a non-UTF-8 header is read as Latin-1.
"""

from __future__ import annotations

import json
import typing as t
import uuid
from urllib.parse import quote

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from flask_sse_push import Broker, MemoryBroker, SSEPush
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.validation import MAX_EVENT_ID_LENGTH
from tests.support.wire import parse

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import RedisServer


@pytest.fixture(params=["memory", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """Every broker: the rule lives in the view, but the lookup in the broker."""
    if request.param == "memory":
        yield MemoryBroker()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis_broker = RedisBroker.from_url(server.url, prefix=f"t{uuid.uuid4().hex}:")
    yield redis_broker
    redis_broker.close()


#: Header values as a WSGI server hands them over (Latin-1 text), none of
#: which this app ever issued. Each used to get 400 or would be refused.
BAD_HEADERS = [
    "x" * (MAX_EVENT_ID_LENGTH + 1),
    "9" * 8000,
    b"\xff\xfe".decode("latin-1"),
    b"\xc3\x28".decode("latin-1"),  # invalid UTF-8
    "ünïçødé",  # Latin-1 bytes of an id this app never issued
    "a\x01b",
    "a\x7fb",
    "a\tb",
]

#: Query values (percent-encoded) that reach the app unchanged.
BAD_QUERIES = [
    "a%00b",
    "%00",
    "a%0Db",
    "a%0Ab",
    "a%01b",
    "%FF%FE",
    "x" * (MAX_EVENT_ID_LENGTH + 1),
    quote(" lead"),
]


def _read_events(response: TestResponse, count: int) -> list[t.Any]:
    chunks = t.cast("Iterator[bytes]", iter(response.response))
    body = b""
    for _ in range(200):
        if len(parse(body).events) >= count:
            break
        body += next(chunks)
    return parse(body).events


def _reset_then_live(app: Flask, sse: SSEPush, **request: t.Any) -> None:
    with app.app_context():
        head = sse.publish("old")
    response = app.test_client().get("/events", **request)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    try:
        with app.app_context():
            live = sse.publish("live")
        reset, event = _read_events(response, 2)
    finally:
        response.close()
    assert reset.type == "reset"
    assert json.loads(reset.data)["reason"] == "unknown"
    assert reset.last_event_id == head
    assert (event.data, event.last_event_id) == ("live", live)


@pytest.mark.parametrize("value", BAD_HEADERS)
def test_header_cursor_that_matches_nothing_gets_reset_and_the_live_stream(
    app: Flask, broker: Broker, value: str
) -> None:
    _reset_then_live(app, SSEPush(app, broker=broker), headers={"Last-Event-ID": value})


@pytest.mark.parametrize("value", BAD_QUERIES)
def test_query_cursor_that_matches_nothing_gets_reset_and_the_live_stream(
    app: Flask, broker: Broker, value: str
) -> None:
    sse = SSEPush(app, broker=broker)
    _reset_then_live(app, sse, query_string=f"last_event_id={value}")


@pytest.mark.parametrize("event_id", ["ünïçødé", "café", "ÿ"])
def test_latin1_header_resumes_exactly(app: Flask, broker: Broker, event_id: str) -> None:
    """The Node eventsource package and requests send the id as Latin-1."""
    sse = SSEPush(app, broker=broker)
    with app.app_context():
        sse.publish("1", id=event_id)
        after = sse.publish("2")
    response = app.test_client().get(
        "/events", headers={"Last-Event-ID": event_id.encode("latin-1").decode("latin-1")}
    )
    try:
        assert response.status_code == 200
        (event,) = _read_events(response, 1)
    finally:
        response.close()
    assert (event.type, event.data, event.last_event_id) == ("message", "2", after)
