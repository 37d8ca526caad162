"""Loss is always a ``reset``: cursors the store cannot vouch for, on real servers.

A Redis restarted from an older snapshot never issued the ids it lost, though
they lie below what it issues next; a Redis Cluster cursor with numbers no
broker issues (past 2**64, past 36**13) must be a ``reset``, never the
"broker unavailable" answer that has the client retry forever.
"""

from __future__ import annotations

import json
import signal
import typing as t

import httpx
import pytest
import redis

from flask_sse_push import ServerSentEvent
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from tests.apps.lifecycle_app import environment
from tests.support.cluster_helpers import RedisCluster
from tests.support.servers import RedisServer, gunicorn

if t.TYPE_CHECKING:
    from flask_sse_push import Broker

pytestmark = pytest.mark.integration


def first_events(broker: Broker, channels: list[str], cursor: str) -> list[ServerSentEvent]:
    """What a resume from ``cursor`` gets at once (the replay, or a reset)."""
    events: list[ServerSentEvent] = []
    with broker.subscribe(channels, last_event_id=cursor) as sub:
        while batch := sub.get(0.3):
            events += batch
    return events


def test_a_redis_restored_from_an_older_snapshot_resets_cursors_it_lost(prefix: str) -> None:
    """Snapshot holds events 1-10 of 1-20; after the restart 21-23 are published.
    Resuming from 12 or 15 must not get 21-23 as if 13-20 never were."""
    with RedisServer() as server:
        broker = RedisBroker.from_url(server.url, prefix=prefix)
        ids = [broker.publish("orders", ServerSentEvent(str(n))) for n in range(1, 11)]
        admin = redis.Redis.from_url(server.url)
        admin.save()
        admin.close()
        ids += [broker.publish("orders", ServerSentEvent(str(n))) for n in range(11, 21)]
        broker.close()
        server.stop(signal.SIGKILL)  # no save at exit: the snapshot is what comes back
        server.start()
        broker = RedisBroker.from_url(server.url, prefix=prefix)
        try:
            ids += [broker.publish("orders", ServerSentEvent(str(n))) for n in range(21, 24)]
            for resume_from in (12, 15):
                cursor = ids[resume_from - 1]
                got = first_events(broker, ["orders"], cursor)
                assert [event.event for event in got] == ["reset"], [e.data for e in got]
                assert json.loads(got[0].data) == {"last_event_id": cursor, "reason": "unknown"}
                assert got[0].id == ids[-1]
                # Several channels: the quiet one does not vouch for the cursor.
                both = first_events(broker, ["orders", "quiet"], cursor)
                assert [event.event for event in both] == ["reset"]
            # What the snapshot still holds resumes exactly.
            got = first_events(broker, ["orders"], ids[8])
            assert [event.data for event in got] == ["10", "21", "22", "23"]
        finally:
            broker.close()


def test_a_restore_is_seen_even_when_only_other_channels_were_published_since(
    prefix: str,
) -> None:
    """The resumed channel has nothing after the lost cursor: the restart's hole tells."""
    with RedisServer() as server:
        broker = RedisBroker.from_url(server.url, prefix=prefix)
        ids = [broker.publish("orders", ServerSentEvent(str(n))) for n in range(1, 11)]
        admin = redis.Redis.from_url(server.url)
        admin.save()
        admin.close()
        ids += [broker.publish("orders", ServerSentEvent(str(n))) for n in range(11, 21)]
        broker.close()
        server.stop(signal.SIGKILL)
        server.start()
        broker = RedisBroker.from_url(server.url, prefix=prefix)
        try:
            broker.publish("elsewhere", ServerSentEvent("after the restart"))
            got = first_events(broker, ["orders"], ids[14])
            assert [event.event for event in got] == ["reset"]
            assert first_events(broker, ["orders"], ids[9]) == []  # held: nothing after it
        finally:
            broker.close()


def test_a_restart_that_kept_everything_resets_nobody(prefix: str) -> None:
    """With the append-only file every write survives: the hole is empty of issued ids."""
    with RedisServer(persist=True) as server:
        broker = RedisBroker.from_url(server.url, prefix=prefix)
        ids = [broker.publish("orders", ServerSentEvent(str(n))) for n in range(1, 6)]
        broker.close()
        server.stop()
        server.start()
        broker = RedisBroker.from_url(server.url, prefix=prefix)
        try:
            broker.publish("orders", ServerSentEvent("6"))
            got = first_events(broker, ["orders"], ids[2])
            assert [event.data for event in got] == ["4", "5", "6"]
            assert first_events(broker, ["orders", "other"], ids[4])[0].data == "6"
        finally:
            broker.close()


def test_a_flushed_redis_resets_every_cursor(prefix: str) -> None:
    with RedisServer() as server:
        broker = RedisBroker.from_url(server.url, prefix=prefix)
        try:
            cursor = [broker.publish("orders", ServerSentEvent(str(n))) for n in range(5)][2]
            broker.client.flushall()
            broker.publish("orders", ServerSentEvent("after"))
            got = first_events(broker, ["orders"], cursor)
            assert [event.event for event in got] == ["reset"]
        finally:
            broker.close()


def test_a_channel_whose_stream_was_deleted_resets_its_cursors(prefix: str) -> None:
    """``DEL`` of one channel's stream while the clock stays: what it issued after
    the cursor is gone, with or without a publish since, on it or on another channel."""
    with RedisServer() as server:
        broker = RedisBroker.from_url(server.url, prefix=prefix)
        try:
            _a_deleted_stream_resets_its_cursors(broker, f"{prefix}stream:orders", "unknown")
        finally:
            broker.close()


def _a_deleted_stream_resets_its_cursors(
    broker: RedisBroker | RedisClusterBroker, stream_key: str, reason: str | None
) -> None:
    """Publish to ``orders`` (and ``other``), ``DEL`` the ``orders`` stream at
    ``stream_key``, and check what each cursor then gets.

    :param reason: the ``reset`` event's reason to expect, or ``None`` to not look.
    """
    ids = [broker.publish("orders", ServerSentEvent(str(n))) for n in range(1, 6)]
    broker.publish("other", ServerSentEvent("elsewhere"))
    broker.client.delete(stream_key)
    for channels in (["orders"], ["orders", "other"]):
        got = first_events(broker, channels, ids[1])
        assert [event.event for event in got] == ["reset"], [e.data for e in got]
        if reason is not None:
            assert json.loads(got[0].data)["reason"] == reason
    broker.publish("orders", ServerSentEvent("6"))
    got = first_events(broker, ["orders"], ids[1])
    assert [event.event for event in got] == ["reset"], [e.data for e in got]
    # The newest id it issued before the delete lost nothing after it.
    got = first_events(broker, ["orders"], ids[-1])
    assert [event.data for event in got] == ["6"]


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


HUGE = _b36(36**13 - 1)
TWO_64 = _b36(2**64)

#: Composite cursors for two channels with numbers no broker issued, in every part.
OUT_OF_RANGE = [
    f"~{HUGE}.0-0.0-0",
    f"~{TWO_64}.0-0.0-0",
    f"~{HUGE}.{HUGE}-0.0-0",
    f"~{TWO_64}.{TWO_64}-0.-",
    f"~1.0-{HUGE}.0-0",
    f"~1.0-{TWO_64}.0-0",
    f"~1.0-0.0-{TWO_64}",
    f"~{TWO_64}.1-{TWO_64}.0-{HUGE}",
    f"~{TWO_64}..",
    f"~1.0-0.1-{_b36(2**64 - 1)}",
    f"~~{HUGE}-0.1",
    f"~~1-{TWO_64}.1",
    "18446744073709551615-0",
    "0-18446744073709551616",
    "999999999999999-999999999999999",
]


def test_cluster_cursors_with_any_number_are_a_reset_never_unavailable(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    broker = RedisClusterBroker.from_url(redis_cluster.url, prefix=prefix)
    try:
        for channel in ("a", "b"):
            broker.publish(channel, ServerSentEvent(channel))
        for cursor in OUT_OF_RANGE:
            got = first_events(broker, ["a", "b"], cursor)
            assert [event.event for event in got] == ["reset"], cursor
            got = first_events(broker, ["a"], cursor)
            assert [event.event for event in got] == ["reset"], cursor
    finally:
        broker.close()


def test_an_out_of_range_cluster_cursor_gets_a_reset_over_http(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    config = {
        "SSE_PUSH_BROKER_URL": redis_cluster.url,
        "SSE_PUSH_REDIS_PREFIX": prefix,
        "SSE_PUSH_KEEPALIVE": 5.0,
    }
    with gunicorn("tests.apps.lifecycle_app:create_app()", env=environment(**config)) as site:
        for cursor in OUT_OF_RANGE[:3]:
            url = f"{site.url}/events?channel=a&channel=b"
            with httpx.stream(
                "GET", url, headers={"Last-Event-ID": cursor}, timeout=10
            ) as response:
                lines = []
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith("data:") or "unavailable" in line:
                        break
            assert "event: reset" in lines, lines


def test_a_user_without_the_info_right_still_publishes_and_resumes(prefix: str) -> None:
    """The restart check runs INFO inside the publish script; without the right, it is skipped."""
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        admin.acl_setuser(
            "limited",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-info"],
        )
        admin.close()
        url = f"redis://limited:pw@127.0.0.1:{server.port}/0"
        broker = RedisBroker.from_url(url, prefix=prefix)
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):
                broker.client.info()
            ids = [broker.publish("orders", ServerSentEvent(str(n))) for n in range(3)]
            assert [event.data for event in first_events(broker, ["orders"], ids[0])] == ["1", "2"]
        finally:
            broker.close()


def _on_two_shards(cluster: RedisCluster, prefix: str) -> tuple[str, str]:
    """Two channel names whose keys live on different masters."""
    names = [f"c{n}" for n in range(20)]
    owners = {name: cluster.owner_port(f"{prefix}{{{name}}}") for name in names}
    other = next(name for name in names if owners[name] != owners["c0"])
    return "c0", other


def _summary(entry_id: str) -> str:
    """The summary cursor whose oldest position is ``entry_id`` (tag 1)."""
    ms, _, seq = entry_id.partition("-")
    return f"~~{_b36(int(ms))}-{_b36(int(seq))}.1"


def test_a_cluster_shard_restored_from_an_older_snapshot_resets_cursors_it_lost(
    prefix: str,
) -> None:
    """A real master restarted from its own older ``SAVE``: its channel lost 11-20.
    A plain id or summary over two channels, taken from the other channel after
    the loss began, must be a ``reset``, before and after a new publish there."""
    with RedisCluster(masters=3) as cluster:
        lossy, steady = _on_two_shards(cluster, prefix)
        broker = RedisClusterBroker.from_url(cluster.url, prefix=prefix)
        ids: dict[str, list[str]] = {lossy: [], steady: []}

        def publish(numbers: range) -> None:
            for n in numbers:
                for name in (lossy, steady):
                    ids[name].append(broker.publish(name, ServerSentEvent(f"{name}-{n}")))

        publish(range(1, 11))
        port = cluster.owner_port(f"{prefix}{{{lossy}}}")
        with cluster.node(port) as node:
            node.save()
        publish(range(11, 21))
        broker.close()
        cluster.kill(port)  # no save at exit: the snapshot is what comes back
        cluster.start_node(port)
        cluster.wait_ok()
        broker = RedisClusterBroker.from_url(cluster.url, prefix=prefix)
        try:
            cursor = ids[steady][14]  # published after the lossy channel's 15th
            channels = sorted([lossy, steady])
            # The steady channel's own events may follow the reset; not before it.
            for sent in (cursor, _summary(cursor)):
                got = first_events(broker, channels, sent)
                assert got[0].event == "reset", [e.data for e in got]
                assert json.loads(got[0].data)["reason"] == "unknown"
            broker.publish(lossy, ServerSentEvent(f"{lossy}-21"))
            for sent in (cursor, _summary(cursor)):
                got = first_events(broker, channels, sent)
                assert got[0].event == "reset", [e.data for e in got]
            # A cursor from before the snapshot: the shard holds what followed it.
            got = first_events(broker, channels, ids[steady][4])
            assert "reset" not in [event.event for event in got]
            assert f"{lossy}-10" in [event.data for event in got]
        finally:
            broker.close()


def test_a_cluster_channel_whose_stream_was_deleted_resets_its_cursors(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    broker = RedisClusterBroker.from_url(redis_cluster.url, prefix=prefix)
    try:
        _a_deleted_stream_resets_its_cursors(broker, f"{prefix}{{orders}}:stream", None)
    finally:
        broker.close()
