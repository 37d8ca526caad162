"""The Redis Cluster broker: cursors, sharding, resume and slot moves, on a real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import typing as t

import pytest

from flask_sse_push import ServerSentEvent
from flask_sse_push.brokers import broker_from_url
from flask_sse_push.brokers._replay import FIRST_PAGE, PAGE_ENTRIES
from flask_sse_push.brokers.redis.cluster._cursor import (
    decode_positions,
    encode_positions,
    plain_start,
    wire_id,
)
from flask_sse_push.brokers.redis.cluster._scripts import clock_key, keys
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker, parse_cluster_url
from tests.support.cluster_helpers import migrate_slot
from tests.support.redis_helpers import reconnecting_clients, take

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from flask_sse_push.brokers.redis._scripts import Key
    from flask_sse_push.brokers.redis.cluster._cursor import ChannelRead
    from tests.support.cluster_helpers import RedisCluster


# -- cursors and URLs (no cluster needed) ---------------------------------------------


def test_composite_cursor_round_trips() -> None:
    """Positions survive encoding, "nothing yet" included, and the text stays short."""
    positions = [(1796007962771, 426000), (0, 0), (1796007962000, 0), (5, 7)]
    text = encode_positions(positions)
    assert decode_positions(text, 4) == positions
    assert len(encode_positions(positions[:1] * 2)) < 30


def test_a_cursor_too_long_for_last_event_id_falls_back_to_a_unique_summary() -> None:
    """Hundreds of channels: the oldest position, so a resume repeats but never skips,
    and a tag that differs for every event of the stream, so ids never repeat."""
    positions = [(1796007962771 - n * 1000, n) for n in range(100)] + [(0, 0)]
    summary = wire_id(positions)
    assert summary.startswith("~~") and len(summary) <= 256
    assert plain_start(summary) == (1796007863771, 99)
    assert decode_positions(summary, len(positions)) is None
    later = [*positions[:-1], (1796007962999, 0)]  # the quiet channel's first event
    assert wire_id(later) != summary and plain_start(wire_id(later)) == (1796007863771, 99)
    assert len(wire_id(positions[:5])) <= 256 and wire_id(positions[:5]).startswith("~")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "~",
        "~zz",
        "~1.0-0",  # one position, two channels
        "~1.0-0.0-0.0-0",  # three positions
        "~1.0-0.2-0",  # a delta larger than the base
        "~1.0-0.x",  # no dash
        "~1.0-0.-",
        "~1.0-0.0-A",  # upper case is not base 36 here
        "~" + "z" * 14 + ".0-0.0-0",  # too many digits
        "~1.0-0.0--1",
        "1796007962771-426000",  # a plain id is no composite
    ],
)
def test_malformed_composite_cursors_are_refused(text: str) -> None:
    assert decode_positions(text, 2) is None


def test_cluster_urls_name_seeds_and_credentials() -> None:
    seeds, options = parse_cluster_url("redis+cluster://u:p%40ss@10.0.0.1:7000,[::1]:7001/0")
    assert seeds == [("10.0.0.1", 7000), ("::1", 7001)]
    assert options == {"ssl": False, "username": "u", "password": "p@ss"}
    assert parse_cluster_url("rediss+cluster://h:1")[1] == {"ssl": True}
    for bad in ("redis+cluster://", "redis+cluster://host", "redis+cluster://h:x", "redis://h:1"):
        with pytest.raises(ValueError, match="cluster"):
            parse_cluster_url(bad)


def test_a_prefix_with_braces_is_refused() -> None:
    """A brace in the prefix would become the hash tag of every key: one shard for all."""
    with pytest.raises(ValueError, match="brace"):
        RedisClusterBroker.from_url("redis+cluster://127.0.0.1:1", prefix="app{1}:")


def test_broker_url_selects_the_cluster_broker_without_connecting() -> None:
    """The broker is made before gunicorn forks: nothing connects until first use."""
    broker = broker_from_url("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    assert isinstance(broker, RedisClusterBroker)
    assert broker.where() == "127.0.0.1:1,127.0.0.1:2"
    broker.close()


# -- on a real cluster --------------------------------------------------------------


@pytest.fixture
def broker(redis_cluster: RedisCluster, prefix: str) -> Iterator[RedisClusterBroker]:
    made = RedisClusterBroker.from_url(redis_cluster.url, prefix=prefix, history=1000)
    yield made
    made.close()


def spread_channels(cluster: RedisCluster, prefix: str, count: int) -> list[str]:
    """``count`` channel names, each on a different master (``count`` <= masters)."""
    found: dict[int, str] = {}
    for n in range(1000):
        name = f"ch{n}"
        found.setdefault(cluster.owner_port(keys(prefix, name)[2]), name)
        if len(found) == count:
            return list(found.values())
    raise AssertionError("could not spread channels over the masters")


def publish(broker: RedisClusterBroker, channel: str, data: str) -> str:
    return broker.publish(channel, ServerSentEvent(data))


@pytest.mark.integration
def test_each_channel_lives_on_one_shard_and_publishes_spread(
    redis_cluster: RedisCluster, broker: RedisClusterBroker, prefix: str
) -> None:
    """A channel's stream stays on its owner; 30 channels use every master; no shared key."""
    per_master: dict[int, int] = {}
    for n in range(30):
        channel = f"spread{n}"
        publish(broker, channel, "x")
        owner = redis_cluster.owner_port(keys(prefix, channel)[2])
        per_master[owner] = per_master.get(owner, 0) + 1
        node = redis_cluster.node(owner)
        assert node.xlen(keys(prefix, channel)[0]) == 1
        node.close()
    assert sorted(per_master) == redis_cluster.master_ports()
    assert min(per_master.values()) >= 3
    for port in redis_cluster.master_ports():
        node = redis_cluster.node(port)
        names = list(node.scan_iter(match=f"{prefix}*"))
        node.close()
        assert names, port
        assert all("{" in name for name in names), names


@pytest.mark.integration
def test_multi_shard_stream_resumes_exactly_from_its_cursor(
    redis_cluster: RedisCluster, broker: RedisClusterBroker, prefix: str
) -> None:
    """A client of channels on two shards misses events on both, and gets exactly those."""
    one, two = spread_channels(redis_cluster, prefix, 2)
    with broker.subscribe([one, two]) as sub:
        publish(broker, one, "1a")
        publish(broker, two, "2a")
        seen = take(sub, 2)
    cursor = seen[-1].id
    assert cursor is not None and cursor.startswith("~")
    missed = [publish(broker, ch, f"{ch}-{n}") for n in range(5) for ch in (one, two)]
    other = RedisClusterBroker.from_url(redis_cluster.url, prefix=prefix)  # "another worker"
    try:
        with other.subscribe([two, one], last_event_id=cursor) as sub:
            publish(other, one, "live")
            events = take(sub, 11)
            assert sub.get(0.2) == []
    finally:
        other.close()
    assert [e.event for e in events] == [None] * 11
    assert [e.data for e in events] == [f"{ch}-{n}" for n in range(5) for ch in (one, two)] + [
        "live"
    ]
    assert len(missed) == 10


@pytest.mark.integration
def test_one_subscription_of_many_channels_on_every_shard(
    redis_cluster: RedisCluster, broker: RedisClusterBroker
) -> None:
    """Channels of many slots at once: Redis takes one slot per SSUBSCRIBE, the broker splits."""
    channels = [f"many{n}" for n in range(60)]
    with broker.subscribe(channels) as sub, broker.subscribe(channels[::-1]) as again:
        for name in channels:
            publish(broker, name, name)
        got = take(sub, 60)
        assert sorted(e.data for e in take(again, 60)) == sorted(channels)
    assert sorted(e.data for e in got) == sorted(channels)


@pytest.mark.integration
def test_cursor_of_several_channels_resumes_from_now(
    redis_cluster: RedisCluster, broker: RedisClusterBroker, prefix: str
) -> None:
    one, two, three = spread_channels(redis_cluster, prefix, 3)
    publish(broker, one, "old")
    cursor = broker.cursor([three, one, two])
    assert cursor.startswith("~")
    publish(broker, two, "new2")
    publish(broker, three, "new3")
    with broker.subscribe([one, two, three], last_event_id=cursor) as sub:
        assert [e.data for e in take(sub, 2)] == ["new2", "new3"]
        assert sub.get(0.1) == []


@pytest.mark.integration
@pytest.mark.parametrize(
    "cursor",
    [
        "~garbage",
        "~1.0-0",  # a composite for one channel
        "~1.0-0.0-0.0-0",  # ... for three
        "1-1",  # a plain id no channel issued
        "~ab3.0-5.0-7",  # positions no stream holds
        "ünïçødé",
        "order-that-does-not-exist",
    ],
)
def test_cursors_that_match_nothing_get_a_reset_and_the_live_stream(
    redis_cluster: RedisCluster, broker: RedisClusterBroker, prefix: str, cursor: str
) -> None:
    one, two = spread_channels(redis_cluster, prefix, 2)
    publish(broker, one, "before")
    now = broker.cursor([one, two])
    with broker.subscribe([one, two], last_event_id=cursor) as sub:
        (reset,) = take(sub, 1)
        publish(broker, two, "live")
        (live,) = take(sub, 1)
    assert reset.event == "reset"
    assert json.loads(reset.data) == {"last_event_id": cursor, "reason": "unknown"}
    assert live.data == "live"
    assert reset.id == now  # resuming from it gives no second reset


@pytest.mark.integration
def test_a_position_the_cluster_lost_gets_a_reset(
    redis_cluster: RedisCluster, broker: RedisClusterBroker, prefix: str
) -> None:
    """A wiped stream (a node restarted without its data) cannot replay: reset, not silence.

    Both a composite cursor (a position of that very channel) and a plain id
    (which, as a time, could come from any channel) get one, because the
    stream now begins with an entry that follows nothing."""
    one, two = spread_channels(redis_cluster, prefix, 2)
    publish(broker, one, "kept")
    publish(broker, two, "lost")
    cursor = broker.cursor([one, two])
    single = broker.cursor([two])
    node = redis_cluster.node(redis_cluster.owner_port(keys(prefix, two)[2]))
    # A wiped node loses every key of the channel, its clock record too (with
    # that record kept, the channel's next entry still names the lost one).
    node.delete(keys(prefix, two)[0], clock_key(prefix, two))
    node.close()
    publish(broker, two, "after the loss")
    for last_event_id, channels in ((cursor, [one, two]), (single, [two])):
        with broker.subscribe(channels, last_event_id=last_event_id) as sub:
            events = take(sub, 1)
            assert sub.get(0.1) == []
        assert [e.event for e in events] == ["reset"], last_event_id
        assert json.loads(events[0].data)["reason"] == "unknown"


@pytest.mark.integration
def test_a_plain_id_of_another_channel_resumes_a_single_channel_stream(
    redis_cluster: RedisCluster, broker: RedisClusterBroker, prefix: str
) -> None:
    """Ids are times: another channel's id is a position (the contract's cursor-scope rule),
    also when that channel lives on another shard."""
    public, private = spread_channels(redis_cluster, prefix, 2)
    publish(broker, public, "p1")
    other = publish(broker, private, "s1")
    publish(broker, public, "p2")
    with broker.subscribe([public], last_event_id=other) as sub:
        assert [(e.event, e.data) for e in take(sub, 1)] == [(None, "p2")]
        assert sub.get(0.1) == []


@pytest.mark.integration
def test_reconnecting_multi_shard_clients_get_every_event_once(
    redis_cluster: RedisCluster, broker: RedisClusterBroker, prefix: str
) -> None:
    """The handover under load: clients reconnect at random with their last cursor."""
    channels = spread_channels(redis_cluster, prefix, 3)
    published: list[tuple[str, str]] = []

    def publish_one(n: int) -> None:
        channel = channels[n % 3]
        publish(broker, channel, str(n))
        published.append((channel, str(n)))

    views = reconnecting_clients(broker, channels, publish_one, 300)
    assert len(published) == 300
    for seen in views:
        assert sorted(seen, key=int) == [data for _, data in published]  # each once
        for channel in channels:  # and in order per channel
            mine = {data for ch, data in published if ch == channel}
            assert [d for d in seen if d in mine] == [d for ch, d in published if ch == channel]


@pytest.mark.integration
@pytest.mark.parametrize("page", [0, 1], ids=["first_page", "later_page"])
def test_a_replay_page_skips_nothing_published_between_its_channels_reads(
    redis_cluster: RedisCluster,
    broker: RedisClusterBroker,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    page: int,
) -> None:
    """A replay page reads its channels one after another, each on its shard. The
    channel read first may move on before the next one fills its page: what it got
    meanwhile is below that page's bound, yet in neither page, and must still come
    (once), not be taken for covered and dropped from the live events held back.

    The reads are the real ones; the test only publishes between two of them, as a
    busy publisher does while a loaded worker reads slowly.
    """
    first, second = sorted(spread_channels(redis_cluster, prefix, 2))  # the read order
    publish(broker, first, "before")
    publish(broker, second, "before")
    cursor = broker.cursor([first, second])
    expected: dict[str, list[str]] = {first: [], second: []}
    tags = {first: "f", second: "s"}

    def publish_more(channel: str, count: int) -> None:
        for _ in range(count):
            data = f"{tags[channel]}{len(expected[channel])}"
            publish(broker, channel, data)
            expected[channel].append(data)

    # For a later page, full first pages on both channels; the first channel then
    # has a few entries left for the page under test, short of filling it.
    publish_more(first, 2 if page == 0 else FIRST_PAGE + 5)
    publish_more(second, 0 if page == 0 else FIRST_PAGE + 3)
    real_read = broker.read_channel
    reads_of_first: list[ChannelRead] = []

    def read_channel(
        channel: str, start: Key | None, user_id: str | None = None, count: int | None = None
    ) -> ChannelRead:
        read = real_read(channel, start, user_id, count)
        if channel == first:
            reads_of_first.append(read)
            if len(reads_of_first) == page + 1:
                # The first channel moves on, then the second fills this page.
                publish_more(first, 3)
                publish_more(second, PAGE_ENTRIES)
        return read

    monkeypatch.setattr(broker, "read_channel", read_channel)
    with broker.subscribe([first, second], last_event_id=cursor) as sub:
        monkeypatch.undo()
        assert len(reads_of_first) > page  # the page under test was read
        publish(broker, first, "end")
        publish(broker, second, "end")
        events: list[ServerSentEvent] = []
        deadline = time.monotonic() + 10.0
        while [e.data for e in events].count("end") < 2 and time.monotonic() < deadline:
            events += sub.get(0.05)
        assert sub.get(0.2) == []
    assert [e.data for e in events].count("end") == 2
    assert [e.event for e in events if e.event is not None] == []  # no reset: nothing lost
    for channel, mine in expected.items():
        assert [e.data for e in events if e.data.startswith(tags[channel])] == mine


@pytest.mark.integration
def test_a_moved_slot_is_followed_without_loss(
    redis_cluster: RedisCluster, broker: RedisClusterBroker, prefix: str
) -> None:
    """Redis drops the sharded subscription when the slot moves; the broker follows it."""
    moving, staying = spread_channels(redis_cluster, prefix, 2)
    key = keys(prefix, moving)[2]
    origin = redis_cluster.owner_port(key)
    target = next(p for p in redis_cluster.master_ports() if p != origin)
    with broker.subscribe([moving, staying]) as sub:
        before = [publish(broker, moving, f"b{n}") for n in range(5)]
        assert [e.data for e in take(sub, 5)] == [f"b{n}" for n in range(5)]
        migrate_slot(redis_cluster, key, target)
        assert redis_cluster.owner_port(key) == target
        publisher = RedisClusterBroker.from_url(redis_cluster.url, prefix=prefix)
        try:
            for n in range(20):
                publish(publisher, moving, f"a{n}")
                time.sleep(0.02)
        finally:
            publisher.close()
        events = take(sub, 20, timeout=15)
        assert sub.get(0.2) == []
        node = redis_cluster.node(target)
        subscribed = node.pubsub_shardnumsub(key)
        node.close()
    assert [e.data for e in events] == [f"a{n}" for n in range(20)]
    assert len(before) == 5
    assert subscribed == [(key, 1)]
    assert broker.reconnects >= 1


#: Publishes from 8 real OS threads of a gevent-patched process (gevent's thread
#: pool, as a view offloading blocking work would), then from the hub, and prints
#: what happened as JSON.
THREADS_PROBE = """
from gevent import monkey; monkey.patch_all()
import json, sys, time
import gevent
from gevent.threadpool import ThreadPool
from flask_sse_push import ServerSentEvent
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from flask_sse_push import ServerSentEvent
broker = RedisClusterBroker.from_url(sys.argv[1], prefix=sys.argv[2])
sub = broker.subscribe(["t0", "t1", "t2"])
errors = []
def work(n):
    for i in range(20):
        try:
            broker.publish("t%d" % (i % 3), ServerSentEvent("%d-%d" % (n, i)))
        except Exception as exc:
            errors.append(type(exc).__name__)
began = time.monotonic()
pool = ThreadPool(8)
gevent.joinall([pool.spawn(work, n) for n in range(8)], timeout=60)
took = time.monotonic() - began
broker.publish("t0", ServerSentEvent("from the hub"))
got = []
deadline = time.monotonic() + 10
while len(got) < 161 and time.monotonic() < deadline:
    got += sub.get(0.2)
print(json.dumps({"errors": errors, "took": took, "delivered": len(got)}))
broker.close()
"""


@pytest.mark.integration
def test_publish_from_os_threads_in_a_gevent_process(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    """Each OS thread gets its own cluster client: no foreign-hub connection, no hang."""
    done = subprocess.run(
        [sys.executable, "-c", THREADS_PROBE, redis_cluster.url, prefix],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == []
    assert result["delivered"] == 161
    assert result["took"] < 30
