"""A resume replays at most its budget, read in pages; past it comes a ``reset``.

Every broker: in-memory, a real redis-server and a real Redis Cluster; and the
100-channel request of the attack, through real gunicorn workers.
"""

from __future__ import annotations

import json
import selectors
import time
import typing as t

import pytest

from flask_sse_push import Broker, MemoryBroker, ServerSentEvent, SSEPush
from flask_sse_push.brokers import ReplayBudget
from flask_sse_push.brokers._replay import (
    FIRST_PAGE,
    PAGE_BYTES,
    PAGE_ENTRIES,
    complete_part,
    page_count,
)
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from tests.support.redis_helpers import (
    SSEClient,
    take,
)
from tests.support.servers import ROOT, gunicorn

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from flask import Flask

    from tests.support.cluster_helpers import RedisCluster
    from tests.support.servers import RedisServer

BrokerFactory: t.TypeAlias = "t.Callable[..., Broker]"


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.integration),
        pytest.param("redis_cluster", marks=pytest.mark.integration),
    ]
)
def make_broker(request: pytest.FixtureRequest) -> Iterator[BrokerFactory]:
    """Make brokers of one kind sharing one backend, with a given replay budget."""
    kind: str = request.param
    made: list[Broker] = []
    shared: list[MemoryBroker] = []

    def make(*, budget: ReplayBudget | None = None, history: int = 1000) -> Broker:
        broker: Broker
        if kind == "memory":
            # One process, one history: a second broker would have an empty one.
            if not shared:
                shared.append(MemoryBroker(history=history, replay_budget=budget))
            broker = shared[0]
            broker._here().replay_budget = budget or ReplayBudget()
        elif kind == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            broker = RedisBroker.from_url(
                server.url,
                history=history,
                prefix=request.getfixturevalue("prefix"),
                replay_budget=budget,
            )
        else:
            cluster: RedisCluster = request.getfixturevalue("redis_cluster")
            broker = RedisClusterBroker.from_url(
                cluster.url,
                history=history,
                prefix=request.getfixturevalue("prefix"),
                replay_budget=budget,
            )
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def publish_spread(broker: Broker, channels: list[str], per_channel: int) -> list[str]:
    """Publish ``per_channel`` events on each channel, round-robin; return their data in order."""
    sent = []
    for n in range(per_channel):
        for channel in channels:
            data = f"{channel}:{n}"
            broker.publish(channel, ServerSentEvent(data))
            sent.append(data)
    return sent


def read_until_quiet(
    sub: t.Any, quiet: float = 0.5, timeout: float = 30.0
) -> list[ServerSentEvent]:
    """Everything ``sub`` gives until it stays quiet for ``quiet`` seconds."""
    events: list[ServerSentEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = sub.get(quiet)
        if not batch:
            return events
        events += batch
    pytest.fail(f"still receiving after {timeout} s: {len(events)} events")


def test_a_resume_past_the_budget_gets_what_fits_then_a_reset(make_broker: BrokerFactory) -> None:
    """100 channels, 1,100 events behind: the oldest 1,000 in order, then ``reset``
    (reason ``budget``) with a cursor that resumes from now; then the live events."""
    broker = make_broker()
    channels = [f"c{n:03d}" for n in range(100)]
    start = broker.cursor(channels)
    sent = publish_spread(broker, channels, 11)
    with broker.subscribe(channels, last_event_id=start) as sub:
        got = read_until_quiet(sub)
        broker.publish("c042", ServerSentEvent("live"))
        live = take(sub, 1)
    assert [event.data for event in got[:-1]] == sent[:1000]
    reset = got[-1]
    assert reset.event == "reset"
    assert json.loads(reset.data) == {"last_event_id": start, "reason": "budget"}
    assert [event.data for event in live] == ["live"]
    # The reset's id is a cursor of now: resuming from it replays the live event
    # (and, from a cluster's summary of 100 positions, repeats some before it).
    assert reset.id is not None
    with broker.subscribe(channels, last_event_id=reset.id) as again:
        resumed = read_until_quiet(again)
    assert "reset" not in [event.event for event in resumed]
    if reset.id.startswith("~~"):
        assert resumed[-1].data == "live" and set(sent) >= {e.data for e in resumed[:-1]}
    else:
        assert [event.data for event in resumed] == ["live"]


def test_a_replay_within_the_budget_is_whole_across_many_pages(make_broker: BrokerFactory) -> None:
    """Uneven channels (one busy, many quiet) read in pages of a few entries each:
    every event once, in publish order, and no reset."""
    broker = make_broker(budget=ReplayBudget(events=5000))
    channels = [f"q{n:02d}" for n in range(60)]
    start = broker.cursor(channels)
    sent = []
    for n in range(400):
        channel = "q00" if n % 4 else channels[n % 60]
        data = f"{channel}:{n}"
        broker.publish(channel, ServerSentEvent(data))
        sent.append(data)
    assert page_count(len(channels), ReplayBudget(events=5000)) < 400 // 60
    with broker.subscribe(channels, last_event_id=start) as sub:
        got = read_until_quiet(sub)
    assert [event.data for event in got] == sent


def test_the_byte_budget_cuts_too(make_broker: BrokerFactory) -> None:
    broker = make_broker(budget=ReplayBudget(events=1000, bytes=10_000))
    start = broker.cursor(["big"])
    for n in range(20):
        broker.publish("big", ServerSentEvent(f"{n:02d}" + "x" * 998))
    with broker.subscribe(["big"], last_event_id=start) as sub:
        got = read_until_quiet(sub)
    assert [event.data[:2] for event in got[:-1]] == [f"{n:02d}" for n in range(9)]
    assert got[-1].event == "reset" and json.loads(got[-1].data)["reason"] == "budget"
    assert sum(len(event.encode()) for event in got[:-1]) <= 10_000


def test_an_event_larger_than_the_whole_budget_is_a_reset_not_a_stall(
    make_broker: BrokerFactory,
) -> None:
    broker = make_broker(budget=ReplayBudget(events=10, bytes=100))
    start = broker.cursor(["huge"])
    broker.publish("huge", ServerSentEvent("y" * 500))
    with broker.subscribe(["huge"], last_event_id=start) as sub:
        got = read_until_quiet(sub)
    assert [event.event for event in got] == ["reset"]


def test_a_deep_single_channel_resume_stops_at_the_budget(make_broker: BrokerFactory) -> None:
    """Item 11's kind on a small scale: a history far longer than the budget."""
    broker = make_broker(history=3000, budget=ReplayBudget(events=100))
    start = broker.cursor(["deep"])
    for n in range(2500):
        broker.publish("deep", ServerSentEvent(str(n)))
    with broker.subscribe(["deep"], last_event_id=start) as sub:
        got = read_until_quiet(sub)
    assert [event.data for event in got[:-1]] == [str(n) for n in range(100)]
    assert got[-1].event == "reset"


# -- pages (no broker needed) ---------------------------------------------------------


def test_a_page_holds_only_what_is_complete() -> None:
    """Entries past the smallest last key of a full page may have unread neighbours."""
    a = [((1, 0), "a1"), ((4, 0), "a4")]
    b = [((2, 0), "b2"), ((3, 0), "b3")]
    c = [((5, 0), "c5")]
    complete, bound = complete_part([a, b, c], 2)
    assert bound == (3, 0)
    assert [item for _, _, item in complete] == ["a1", "b2", "b3"]
    complete, bound = complete_part([a[:1], b[:1], c], 2)
    assert bound is None
    assert [item for _, _, item in complete] == ["a1", "b2", "c5"]


def test_pages_stay_small_whatever_the_channel_count() -> None:
    for channels in (1, 7, 100, 1000):
        count = page_count(channels, ReplayBudget())
        assert count >= 1 and (count * channels <= PAGE_ENTRIES or count == 1)


def test_pages_of_large_events_read_fewer_entries() -> None:
    """The first page is small; later ones hold about PAGE_BYTES of event data."""
    budget = ReplayBudget(events=100_000)
    assert page_count(1, budget) == FIRST_PAGE
    assert page_count(1, budget, entry_bytes=100) == PAGE_ENTRIES
    assert page_count(1, budget, entry_bytes=64 * 1024) == PAGE_BYTES // (64 * 1024)
    assert page_count(4, budget, entry_bytes=10 * 1024 * 1024) == 1


@pytest.mark.parametrize("bad", [ReplayBudget(events=0), ReplayBudget(bytes=0)])
def test_an_empty_budget_is_refused(bad: ReplayBudget) -> None:
    with pytest.raises(ValueError, match="SSE_PUSH_REPLAY_MAX"):
        MemoryBroker(replay_budget=bad)


# -- the attack, through gunicorn -------------------------------------------------------


@pytest.mark.integration
def test_a_100_channel_resume_from_0_0_is_bounded_on_gunicorn(
    redis_server: RedisServer, prefix: str
) -> None:
    """One request naming 100 channels with ``Last-Event-ID: 0-0``: at most the
    budget, then a reset, instead of the whole history of every channel."""
    env = {
        "SSE_PUSH_BROKER_URL": redis_server.url,
        "SSE_PUSH_REDIS_PREFIX": prefix,
        "PYTHONPATH": str(ROOT),
    }
    publisher = RedisBroker.from_url(redis_server.url, prefix=prefix)
    channels = [f"ch{n:03d}" for n in range(100)]
    try:
        publish_spread(publisher, channels, 12)
    finally:
        publisher.close()
    query = "&".join(f"channel={name}" for name in channels)
    with gunicorn("tests.apps.redis_app:create_app()", env=env, workers=1) as site:
        client = SSEClient(site.port, f"/events?{query}", last_event_id="0-0")
        try:
            selector = selectors.DefaultSelector()
            selector.register(client, selectors.EVENT_READ)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                event.event == "reset" for event in client.events
            ):
                if selector.select(1.0):
                    client.feed()
                if client.ended:
                    break
            selector.close()
        finally:
            client.close()
    assert client.status == 200
    kinds = [event.event for event in client.events]
    assert kinds.count("message") == 1000
    assert kinds[1000] == "reset" and json.loads(client.events[1000].data)["reason"] == "budget"


# -- configuration ----------------------------------------------------------------------


def test_the_config_keys_set_the_budget_of_the_streams(app: Flask) -> None:
    app.config.update(SSE_PUSH_REPLAY_MAX_EVENTS=3, SSE_PUSH_REPLAY_MAX_BYTES=10_000)
    sse = SSEPush(app)
    with app.app_context():
        start = sse.cursor("default")
        for n in range(10):
            sse.publish(str(n))
    response = app.test_client().get("/events", headers={"Last-Event-ID": start})
    chunks = iter(t.cast("t.Iterable[bytes]", response.response))
    body = b""
    while b"event: reset" not in body:
        body += next(chunks)
    response.close()
    assert [line for line in body.split(b"\n") if line.startswith(b"data: ")][:3] == [
        b"data: 0",
        b"data: 1",
        b"data: 2",
    ]
    assert b'"reason": "budget"' in body


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SSE_PUSH_REPLAY_MAX_EVENTS", 0),
        ("SSE_PUSH_REPLAY_MAX_EVENTS", "1000"),
        ("SSE_PUSH_REPLAY_MAX_BYTES", -1),
        ("SSE_PUSH_REPLAY_MAX_BYTES", True),
    ],
)
def test_bad_budget_keys_are_refused_at_init(app: Flask, key: str, value: object) -> None:
    app.config[key] = value
    with pytest.raises(ValueError, match=key):
        SSEPush(app)
