"""Nothing a publisher passes may silently break a client.

Every publish path (``SSEPush.publish``, ``Publisher.publish``, ``flask sse
publish``) refuses reserved ids and types, and ids that cannot come back as
``Last-Event-ID``, with a ``ValueError`` naming the field, and sends nothing.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest
from flask import Flask

from flask_sse_push import MemoryBroker, Publisher, SSEPush
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.runtime import get_runtime
from flask_sse_push.stream import STOP_ID
from flask_sse_push.validation import INVALID_CURSOR, MAX_EVENT_ID_LENGTH, RESERVED_ID_PREFIX
from tests.support.event_ids import GOOD_IDS

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import RedisServer

#: (id, words the error must contain): each would break a client later.
BAD_IDS = [
    (STOP_ID, "reserved"),
    (INVALID_CURSOR, "reserved"),
    (RESERVED_ID_PREFIX + "anything", "reserved"),
    (" lead", "space or tab"),
    ("trail ", "space or tab"),
    ("\tlead", "space or tab"),
    ("trail\t", "space or tab"),
    ("x" * (MAX_EVENT_ID_LENGTH + 1), "characters long"),
    ("a\x01b", "control character"),
    ("a\x1fb", "control character"),
    ("a\x7fb", "control character"),
    ("a\x0bb", "control character"),
    # The Latin-1 bytes of "Ã©" are C3 A9, the UTF-8 of "é": a client that
    # sends Latin-1 would come back with "é".
    ("Ã©", "Latin-1"),
]

BAD_TYPES = ["reset", "open", "error"]


class _Paths:
    """Publish through one of the three paths and read what reached the broker."""

    def __init__(
        self, app: Flask, sse: SSEPush, path: str, publisher: Publisher | None = None
    ) -> None:
        self.app, self.sse, self.path, self.publisher = app, sse, path, publisher
        self.broker = get_runtime(app).broker

    def publish(self, *, event: str | None = None, id: str | None = None) -> object:
        if self.path == "sse.publish":
            with self.app.app_context():
                return self.sse.publish("x", event=event, id=id, channel="c")
        if self.publisher is not None:
            return self.publisher.publish("x", event=event, id=id, channel="c")
        args = ["sse", "publish", "--channel", "c"]
        if event is not None:
            args += ["--event", event]
        if id is not None:
            args += ["--id", id]
        result = self.app.test_cli_runner().invoke(args=[*args, "x"])
        if result.exit_code != 0:
            raise ValueError(f"exit {result.exit_code}: {result.output}")
        return result.output.removesuffix("\n")


@pytest.fixture(params=["sse.publish", "Publisher.publish", "flask sse publish"])
def paths(request: pytest.FixtureRequest, app: Flask) -> Iterator[_Paths]:
    if request.param == "sse.publish":
        yield _Paths(app, SSEPush(app, broker=MemoryBroker()), request.param)
        return
    # The CLI refuses the in-process broker, so it publishes through Redis too.
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t{uuid.uuid4().hex}:"
    broker = RedisBroker.from_url(server.url, prefix=prefix)
    with Publisher(server.url, prefix=prefix) as publisher:
        used = publisher if request.param == "Publisher.publish" else None
        yield _Paths(app, SSEPush(app, broker=broker), request.param, used)
    broker.close()


@pytest.mark.parametrize(("bad_id", "why"), BAD_IDS)
def test_unusable_ids_are_refused_naming_the_field(paths: _Paths, bad_id: str, why: str) -> None:
    subscription = paths.broker.subscribe(["c"])
    try:
        with pytest.raises(ValueError, match="'id'") as caught:
            paths.publish(id=bad_id)
        assert why in str(caught.value)
        assert subscription.get(0) == [], "a refused publish must send nothing"
    finally:
        subscription.close()


@pytest.mark.parametrize("event_type", BAD_TYPES)
def test_reserved_event_types_are_refused_naming_the_field(paths: _Paths, event_type: str) -> None:
    subscription = paths.broker.subscribe(["c"])
    try:
        with pytest.raises(ValueError, match="'event'") as caught:
            paths.publish(event=event_type)
        assert "reserved" in str(caught.value)
        assert subscription.get(0) == []
    finally:
        subscription.close()


@pytest.mark.parametrize("good_id", GOOD_IDS)
def test_usable_ids_are_published(paths: _Paths, good_id: str) -> None:
    subscription = paths.broker.subscribe(["c"])
    try:
        assert paths.publish(id=good_id) == good_id
        (event,) = subscription.get(1)
        assert event.id == good_id
    finally:
        subscription.close()
