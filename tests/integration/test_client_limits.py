"""Per-client limits: one client cannot take every stream slot of a worker."""

from __future__ import annotations

import logging
import typing as t

import pytest
from flask import Flask, request

from flask_sse_push import SSEPush
from flask_sse_push.connections import StreamInfo, StreamRegistry, client_key
from flask_sse_push.runtime import client_share
from flask_sse_push.testing import TestStream, open_stream
from tests.support.raw_client import RawStream, pump
from tests.support.servers import GEVENT_WORKER, gunicorn

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from flask.testing import FlaskClient


def _client(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _opened(stream: TestStream) -> bool:
    """Whether the stream was accepted: its first chunk is not the transient answer."""
    stream._pull(5)
    return not any(comment.startswith("unavailable") for comment in stream.parser.comments)


@pytest.fixture
def streams() -> Iterator[list[TestStream]]:
    opened: list[TestStream] = []
    yield opened
    for stream in opened:
        stream.close()


def test_one_address_gets_its_share_and_others_still_get_in(
    app: Flask, streams: list[TestStream]
) -> None:
    app.config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"] = 3
    SSEPush(app)
    greedy = _client(app, "10.0.0.1")
    streams.extend(open_stream(greedy) for _ in range(5))
    assert [_opened(stream) for stream in streams] == [True] * 3 + [False] * 2
    refused = streams[-1]
    assert refused.status_code == 200  # the transient answer: EventSource comes back
    assert "closed: too many streams from this client" in refused.parser.comments
    assert refused.parser._retry is not None
    other = open_stream(_client(app, "10.0.0.2"))
    streams.append(other)
    assert _opened(other)
    # A slot given back can be taken again.
    streams[0].close()
    again = open_stream(greedy)
    streams.append(again)
    assert _opened(again)


def test_an_identity_counts_across_addresses(app: Flask, streams: list[TestStream]) -> None:
    app.config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"] = 2
    sse = SSEPush(app)

    @sse.identify
    def who() -> str | None:
        return request.headers.get("X-User")

    user = {"X-User": "7"}
    streams.extend(open_stream(_client(app, f"10.0.0.{n}"), headers=user) for n in range(3))
    assert [_opened(stream) for stream in streams] == [True, True, False]
    stranger = open_stream(_client(app, "10.0.0.0"), headers={"X-User": "8"})
    streams.append(stranger)
    assert _opened(stranger)


def test_on_by_default(app: Flask, streams: list[TestStream]) -> None:
    SSEPush(app)
    greedy = _client(app, "10.0.0.1")
    streams.extend(open_stream(greedy) for _ in range(17))
    assert sum(_opened(stream) for stream in streams) == 16


def test_a_proxy_that_nobody_fixed_is_named_once(
    app: Flask, streams: list[TestStream], caplog: pytest.LogCaptureFixture
) -> None:
    app.config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"] = 1
    SSEPush(app)
    proxy = _client(app, "127.0.0.1")
    with caplog.at_level(logging.WARNING, "flask_sse_push"):
        for n in range(3):
            streams.append(open_stream(proxy, headers={"X-Forwarded-For": f"203.0.113.{n}"}))
            _opened(streams[-1])
    hints = [record for record in caplog.records if "ProxyFix" in record.getMessage()]
    assert len(hints) == 1


@pytest.mark.parametrize(
    ("configured", "capacity", "share"),
    [(None, None, 16), (None, 900, 16), (None, 6, 3), (None, 1, 1), (None, 0, 1), (40, 6, 40)],
)
def test_the_default_share(configured: int | None, capacity: int | None, share: int) -> None:
    assert client_share(configured, capacity) == share


def test_an_unhashable_identity_counts_by_address() -> None:
    registry = StreamRegistry(max_connections=None, max_per_client=1, send_timeout=1, retry=None)
    first = registry.open(StreamInfo((), identity=["a"], remote_addr="10.0.0.1"), None)
    assert not isinstance(first, str)
    assert client_key(first.info) == ("address", "10.0.0.1")
    assert registry.open(StreamInfo((), identity=["b"], remote_addr="10.0.0.1"), None) == (
        "too many streams from this client"
    )
    registry.close(first)
    registry.close(first)  # twice: the count stays right
    assert not isinstance(registry.open(StreamInfo((), remote_addr="10.0.0.1"), None), str)


def _connect(port: int, address: str, count: int) -> list[RawStream]:
    streams = [RawStream(port, headers={"X-Forwarded-For": address}) for _ in range(count)]
    pump(streams, lambda: all(b"\n\n" in s.body or s.done for s in streams), timeout=30)
    return streams


def _accepted(streams: list[RawStream]) -> int:
    return sum(s.body.startswith(b": connected") for s in streams)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("worker", "args", "slots", "share"),
    [
        ("gthread", ("--threads", "8"), 6, 3),
        (GEVENT_WORKER, ("--worker-connections", "40"), 36, 16),
    ],
    ids=["gthread", "gevent"],
)
def test_one_client_cannot_fill_a_gunicorn_worker(
    worker: str, args: tuple[str, ...], slots: int, share: int
) -> None:
    """The issue's examples: 6 connections filled a gthread worker of 8 threads, one
    address took all 900 slots of a gevent worker; everyone else got "at capacity"."""
    with gunicorn("tests.apps.limits_app:create_app()", worker=worker, extra_args=args) as server:
        greedy = _connect(server.port, "198.51.100.1", slots)
        victim = _connect(server.port, "198.51.100.2", 1)
        try:
            assert _accepted(greedy) == share
            refused = [s for s in greedy if not s.body.startswith(b": connected")]
            assert all(s.status == 200 and b"too many streams" in s.body for s in refused)
            assert _accepted(victim) == 1, victim[0].body
        finally:
            for stream in greedy + victim:
                stream.close()
