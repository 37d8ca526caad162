"""Revoke everywhere, on fakeredis: two apps on one fake server stand for two
workers that share a broker; a revoke in one ends the streams of the other."""

from __future__ import annotations

import json
import time
import typing as t

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from flask_sse_push import ChannelError, ServerSentEvent, SSEPush
from flask_sse_push.control import CONTROL_CHANNEL
from flask_sse_push.control_messages import MAX_AGE, seal, signing_key
from flask_sse_push.runtime import get_runtime
from flask_sse_push.stream import STOP_ID, STOP_RETRY
from tests.support.control_helpers import Opened, Worker

if t.TYPE_CHECKING:
    pass


def _wait(condition: t.Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_revoke_by_identity_ends_streams_in_the_other_worker(
    workers: tuple[Worker, Worker],
) -> None:
    here, there = workers
    mine = there.open("room", "7")
    other = there.open("room", "8")
    with here.app.app_context():
        assert here.sse.revoke(identity=7) == 0  # none of them in this worker
    ended = mine.ended()
    assert ended.events == [] and ended.last_event_id == STOP_ID
    assert ended.retry == STOP_RETRY
    assert there.live() == [(("room",), 8)]
    other.close()


def test_a_str_selector_matches_an_int_identity_and_back(workers: tuple[Worker, Worker]) -> None:
    here, there = workers
    stream = there.open("room", "42")
    with here.app.app_context():
        here.sse.revoke(channel="room", identity="42")
    assert stream.ended().last_event_id == STOP_ID
    named = there.open("room", "alice")
    with here.app.app_context():
        here.sse.revoke(identity="bob")
        here.sse.revoke(channel="other", identity="alice")
    assert named.still_open()
    assert there.live() == [(("room",), "alice")]
    named.close()


def test_revoke_by_channel_ends_it_in_both_workers_and_nothing_else(
    workers: tuple[Worker, Worker],
) -> None:
    here, there = workers
    a, b, kept = here.open("room", "1"), there.open("room", "2"), there.open("hall", "2")
    with here.app.app_context():
        assert here.sse.revoke("room") == 1
    assert a.ended().last_event_id == b.ended().last_event_id == STOP_ID
    assert there.live() == [(("hall",), 2)]
    kept.close()


def test_a_predicate_keeps_the_revoke_in_this_process(workers: tuple[Worker, Worker]) -> None:
    here, there = workers
    local, remote = here.open("room", "5"), there.open("room", "5")
    with here.app.app_context():
        assert here.sse.revoke("room", lambda info: info.identity == 5) == 1
    assert local.ended().last_event_id == STOP_ID
    assert remote.still_open()
    assert there.live() == [(("room",), 5)]
    remote.close()


def test_reconnect_true_travels(workers: tuple[Worker, Worker]) -> None:
    here, there = workers
    stream = there.open("room", "3")
    with here.app.app_context():
        here.sse.revoke(identity=3, reconnect=True)
    ended = stream.ended()
    assert ended.last_event_id != STOP_ID and ended.retry is not None
    assert ended.retry >= 1000


def test_revoke_needs_a_selector(workers: tuple[Worker, Worker]) -> None:
    here, _ = workers
    with here.app.app_context(), pytest.raises(TypeError, match="needs a selector"):
        here.sse.revoke()


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        json.dumps({"message": "{}", "signature": "00"}),
        json.dumps({"message": 1, "signature": 2}),
    ],
)
def test_forged_and_malformed_messages_are_ignored_and_counted(
    workers: tuple[Worker, Worker], data: str
) -> None:
    here, there = workers
    stream = there.open("room", "9")
    there.broker.publish(CONTROL_CHANNEL, ServerSentEvent(data, event="revoke"))
    control = get_runtime(there.app).control
    _wait(lambda: sum(control.ignored.values()) == 1)
    # The worker goes on: a genuine revoke after it still works.
    with here.app.app_context():
        here.sse.revoke(identity=9)
    assert stream.ended().last_event_id == STOP_ID
    with there.app.app_context():
        assert there.sse.stats()["control"]["ignored"] in ({"malformed": 1}, {"forged": 1})
        assert there.sse.stats()["control"]["applied"] == 1


def test_a_message_signed_with_another_secret_is_forged(workers: tuple[Worker, Worker]) -> None:
    _, there = workers
    stream = there.open("room", "9")
    body = {"channel": None, "identity": "9", "reconnect": False}
    data = seal(signing_key("wrong"), "revoke", body, "intruder", time.time())
    there.broker.publish(CONTROL_CHANNEL, ServerSentEvent(data, event="revoke"))
    control = get_runtime(there.app).control
    _wait(lambda: control.ignored == {"forged": 1})
    stale = seal(signing_key("s3cret"), "revoke", body, "old", time.time() - 2 * MAX_AGE)
    there.broker.publish(CONTROL_CHANNEL, ServerSentEvent(stale, event="revoke"))
    bad_shape = seal(signing_key("s3cret"), "revoke", {"identity": 9}, "x", time.time())
    there.broker.publish(CONTROL_CHANNEL, ServerSentEvent(bad_shape, event="revoke"))
    _wait(lambda: control.ignored == {"forged": 1, "stale": 1, "malformed": 1})
    assert stream.still_open(0.2)
    assert there.live() == [(("room",), 9)]
    stream.close()


def test_the_control_channel_is_closed_to_clients_and_publishers(
    workers: tuple[Worker, Worker],
) -> None:
    here, _ = workers
    response = here.app.test_client().get(f"/events?channel={CONTROL_CHANNEL}")
    assert response.status_code == 400 and b"reserved" in response.data
    with here.app.app_context(), pytest.raises(ChannelError, match="reserved"):
        here.sse.publish("x", channel=CONTROL_CHANNEL)


def test_the_cli_revokes_in_every_worker(workers: tuple[Worker, Worker]) -> None:
    here, there = workers
    stream = there.open("room", "11")
    runner = FlaskCliRunner(here.app)
    result = runner.invoke(args=["sse", "revoke", "--channel", "room", "--identity", "11"])
    assert result.exit_code == 0, result.output
    assert stream.ended().last_event_id == STOP_ID
    refused = runner.invoke(args=["sse", "revoke"])
    assert refused.exit_code != 0 and "--identity" in refused.output


def test_the_control_thread_stops_with_the_worker(workers: tuple[Worker, Worker]) -> None:
    _, there = workers
    runtime = get_runtime(there.app)
    thread = runtime.control.thread
    assert thread is not None and thread.is_alive()
    runtime.monitor.request_shutdown()
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_the_control_thread_stops_when_its_broker_is_closed(
    workers: tuple[Worker, Worker],
) -> None:
    """Closing the app's broker ends the control thread: subscribing again would open
    a listener on the closed broker that nothing ever closes."""
    _, there = workers
    thread = get_runtime(there.app).control.thread
    assert thread is not None and thread.is_alive()
    there.broker.close()
    thread.join(timeout=3)
    assert not thread.is_alive()


def test_memory_broker_revokes_in_process_without_a_thread(app: Flask) -> None:
    sse = SSEPush(app)
    stream = Opened(app, "room", None)
    assert get_runtime(app).control.thread is None
    with app.app_context():
        assert sse.revoke(channel="room") == 1
    assert stream.ended().last_event_id == STOP_ID


def test_the_cli_refuses_the_in_process_broker(app: Flask) -> None:
    SSEPush(app)
    result = FlaskCliRunner(app).invoke(args=["sse", "revoke", "--identity", "1"])
    assert result.exit_code == 1 and "in-process broker" in result.output
