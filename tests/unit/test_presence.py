"""Presence and deployment stats on fakeredis (two apps on one fake server
stand for two workers) and on the in-process broker."""

from __future__ import annotations

import json
import time
import typing as t

import fakeredis
import pytest
from flask import Flask, request

from flask_sse_push import SSEPush
from flask_sse_push.presence import JOIN_EVENT, LEAVE_EVENT
from flask_sse_push.runtime import get_runtime
from tests.support.control_helpers import Opened, Worker
from tests.support.wire import parse

if t.TYPE_CHECKING:
    pass


def _eventually(check: t.Callable[[], object], timeout: float = 5.0) -> None:
    """Retry ``check`` (which asserts) until it passes or ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def presence(worker: Worker, channel: str) -> dict[t.Any, int]:
    with worker.app.app_context():
        return worker.sse.presence(channel)


def test_presence_counts_every_worker_and_keeps_identity_types(
    workers: tuple[Worker, Worker],
) -> None:
    here, there = workers
    streams = [
        here.open("room", "alice"),
        here.open("room", "alice"),
        here.open("room", "7"),
        there.open("room", "alice"),
        there.open("room", None),
        there.open("hall", "bob"),
    ]
    expected = {"alice": 3, 7: 1, None: 1}
    for worker in workers:
        _eventually(lambda w=worker: _equal(presence(w, "room"), expected))  # type: ignore[misc]
    assert presence(here, "hall") == {"bob": 1}
    assert presence(here, "nobody-here") == {}
    streams[3].close()
    streams[4].close()
    _eventually(lambda: _equal(presence(here, "room"), {"alice": 2, 7: 1}))
    for stream in streams:
        stream.close()


def _equal(found: dict[t.Any, int], expected: dict[t.Any, int]) -> None:
    assert found == expected
    # 7 must come back as the int identify() returned, not as "7".
    assert sorted(map(repr, found)) == sorted(map(repr, expected))


def test_a_worker_that_stops_takes_its_record_with_it(workers: tuple[Worker, Worker]) -> None:
    here, there = workers
    stream = there.open("room", "carol")
    _eventually(lambda: _equal(presence(here, "room"), {"carol": 1}))
    stream.close()
    get_runtime(there.app).control.stop()
    _eventually(lambda: _equal(presence(here, "room"), {}))
    records = here.broker.worker_records().read()
    assert list(records) == [get_runtime(here.app).control.name]


def test_records_expire_and_broken_ones_are_skipped(workers: tuple[Worker, Worker]) -> None:
    here, _ = workers
    records = here.broker.worker_records()
    ghost = {"worker": "ghost", "host": "h", "pid": 1, "presence": [["room", "dan", 2]]}
    records.put("ghost", json.dumps(ghost), ttl=0.5)
    records.put("broken", "{not json", ttl=30)
    records.put("odd", json.dumps({"presence": [["room"], "x", ["room", "eve", "2"]]}), ttl=30)
    assert presence(here, "room") == {"dan": 2}
    _eventually(lambda: _equal(presence(here, "room"), {}))
    assert "ghost" not in records.read()


def test_deployment_stats_add_up_the_workers(workers: tuple[Worker, Worker]) -> None:
    here, there = workers
    streams = [here.open("room", "a"), there.open("room", "b"), there.open("hall", "b")]

    def added_up() -> None:
        with here.app.app_context():
            stats = here.sse.stats(scope="deployment")
            mine = here.sse.stats()
        assert stats["clients_connected"] == 3 and mine["clients_connected"] == 1
        assert stats["clients_by_channel"] == {"room": 2, "hall": 1}
        assert len(stats["workers"]) == 2
        assert {w["worker"] for w in stats["workers"]} == {
            get_runtime(w.app).control.name for w in workers
        }

    _eventually(added_up)
    streams[1].close()

    def disconnect_counted() -> None:
        with here.app.app_context():
            stats = here.sse.stats(scope="deployment")
        assert stats["disconnects"] == {"client": 1} and stats["clients_connected"] == 2

    _eventually(disconnect_counted)
    with here.app.app_context(), pytest.raises(ValueError, match="scope"):
        here.sse.stats(scope="everything")
    for stream in streams:
        stream.close()


def test_health_says_which_worker_answered(workers: tuple[Worker, Worker]) -> None:
    here, _ = workers
    body = here.app.test_client().get("/events/health").get_json()
    assert body["worker"]["name"] == get_runtime(here.app).control.name
    assert isinstance(body["worker"]["pid"], int) and body["worker"]["host"]


def test_join_and_leave_events_on_configured_channels() -> None:
    server = fakeredis.FakeServer()
    here = Worker(server, SSE_PUSH_PRESENCE_EVENTS=["room.*"])
    there = Worker(server, SSE_PUSH_PRESENCE_EVENTS=["room.*"])
    try:
        watcher = here.open("room.1", "watcher")
        unseen = here.open("hall", "watcher")
        guest = there.open("room.1", "42")
        guest.close()

        def told() -> None:
            events = parse(watcher.body).events
            assert [(e.type, json.loads(e.data)) for e in events] == [
                (JOIN_EVENT, {"identity": "watcher"}),  # its own, once it is subscribed
                (JOIN_EVENT, {"identity": 42}),
                (LEAVE_EVENT, {"identity": 42}),
            ]

        _eventually(told)
        assert not any(e.type == JOIN_EVENT for e in parse(unseen.body).events)
        with here.app.app_context(), pytest.raises(ValueError, match="reserved"):
            here.sse.publish("forged", event=JOIN_EVENT, channel="room.1")
        watcher.close()
        unseen.close()
    finally:
        here.close()
        there.close()


def test_presence_events_config_is_checked(app: Flask) -> None:
    app.config["SSE_PUSH_PRESENCE_EVENTS"] = "room.*"
    with pytest.raises(ValueError, match="list of channel patterns"):
        SSEPush(app)


def test_memory_broker_presence_is_this_process(app: Flask) -> None:
    sse = SSEPush(app)

    @sse.identify
    def who() -> object:
        return request.headers.get("X-User")

    streams = [Opened(app, "room", "x"), Opened(app, "room", "x"), Opened(app, "room", None)]
    with app.app_context():
        assert sse.presence("room") == {"x": 2, None: 1}
        stats = sse.stats(scope="deployment")
        assert stats["clients_connected"] == 3 and len(stats["workers"]) == 1
    for stream in streams:
        stream.close()
    with app.app_context():
        assert sse.presence("room") == {}
