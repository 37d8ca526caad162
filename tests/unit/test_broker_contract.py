"""One contract, every broker: live delivery, replay, explicit ids, cursor scope,
ending, health, hand-over and consumers.

Here it runs on the in-process brokers (the in-memory one, and Redis on
fakeredis); ``tests/integration/test_broker_contract.py`` runs the same classes
on a real redis-server and a real Redis Cluster.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import typing as t

import fakeredis
import pytest

from flask_sse_push import Broker, MemoryBroker, ServerSentEvent, SubscriptionClosed
from flask_sse_push.brokers import Subscription
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from tests.support.redis_helpers import reconnecting_clients, take

if t.TYPE_CHECKING:
    from collections.abc import Iterator

BrokerFactory: t.TypeAlias = "t.Callable[..., Broker]"


@pytest.fixture(params=["memory", "fakeredis"])
def make_broker(request: pytest.FixtureRequest) -> Iterator[BrokerFactory]:
    """Make brokers of one kind, all sharing one backend; they are closed afterwards."""
    kind: str = request.param
    made: list[Broker] = []
    fake = fakeredis.FakeServer()

    def make(*, history: int = 1000, queue_size: int = 1000) -> Broker:
        broker: Broker
        if kind == "memory":
            broker = MemoryBroker(history=history, queue_size=queue_size)
        else:
            client = fakeredis.FakeRedis(server=fake)
            broker = RedisBroker(client, history=history, queue_size=queue_size)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def broker(make_broker: BrokerFactory) -> Broker:
    return make_broker()


def publish_all(broker: Broker, *pairs: tuple[str, str]) -> list[str]:
    """Publish ``(channel, data)`` pairs; return their ids."""
    return [broker.publish(channel, ServerSentEvent(data)) for channel, data in pairs]


def _assert_merged(
    got: list[str], expected: list[str], channel_of: dict[str, str], broker: Broker
) -> None:
    """``got`` holds exactly ``expected``, each channel's events in order. Brokers with
    one order across channels keep that order too; Redis Cluster's shards share no
    clock, so there events of different shards arrive in the order the worker reads
    them (documented in docs/scaling.md)."""
    assert sorted(got) == sorted(expected)
    for channel in set(channel_of.values()):
        mine = [data for data in got if channel_of[data] == channel]
        assert mine == [data for data in expected if channel_of[data] == channel]
    if not isinstance(broker, RedisClusterBroker):
        assert got == expected


class TestLiveDelivery:
    def test_subscriber_gets_events_published_after_it_subscribed(self, broker: Broker) -> None:
        """Events come in publish order, with the ids publish() returned."""
        with broker.subscribe(["news"]) as sub:
            ids = publish_all(broker, ("news", "a"), ("news", "b"), ("news", "c"))
            events = take(sub, 3)
        assert [e.data for e in events] == ["a", "b", "c"]
        assert [e.id for e in events] == ids
        assert len(set(ids)) == 3

    def test_events_from_before_the_subscription_are_not_sent(self, broker: Broker) -> None:
        """Without a cursor a subscription starts with live events only."""
        publish_all(broker, ("news", "old"))
        with broker.subscribe(["news"]) as sub:
            publish_all(broker, ("news", "new"))
            assert [e.data for e in take(sub, 1)] == ["new"]
            assert sub.get(0.1) == []

    def test_other_channels_are_not_sent(self, broker: Broker) -> None:
        """A subscription sees only its own channels."""
        with broker.subscribe(["a"]) as sub:
            publish_all(broker, ("b", "not for a"), ("a", "for a"))
            assert [e.data for e in take(sub, 1)] == ["for a"]
            assert sub.get(0.1) == []

    def test_multi_channel_subscription_interleaves_in_publish_order(self, broker: Broker) -> None:
        """Events of several channels arrive merged, each channel in publish order,
        and the id each event carries resumes right after it."""
        channel_of = {"1": "a", "2": "b", "3": "b", "4": "a"}
        with broker.subscribe(["a", "b"]) as sub:
            pairs = [("a", "1"), ("b", "2"), ("c", "x"), ("b", "3"), ("a", "4")]
            publish_all(broker, *pairs)
            events = take(sub, 4)
        _assert_merged([e.data for e in events], ["1", "2", "3", "4"], channel_of, broker)
        # The id each event carries is the id publish() returned, or a cursor of
        # positions where the broker has no single order across channels (Redis
        # Cluster: one per shard); either way it resumes right after its event.
        for n, event in enumerate(events[:-1]):
            seen = [e.data for e in events[: n + 1]]
            rest = [data for data in ["1", "2", "3", "4"] if data not in seen]
            with broker.subscribe(["a", "b"], last_event_id=event.id) as again:
                got = [e.data for e in take(again, len(rest))]
            _assert_merged(got, rest, channel_of, broker)

    def test_every_subscriber_gets_every_event(self, broker: Broker) -> None:
        """Fan-out: two subscriptions of one channel both get the event."""
        with broker.subscribe(["a"]) as one, broker.subscribe(["a"]) as two:
            publish_all(broker, ("a", "hello"))
            assert [e.data for e in take(one, 1)] == ["hello"]
            assert [e.data for e in take(two, 1)] == ["hello"]

    def test_event_fields_arrive_unchanged(self, broker: Broker) -> None:
        """Type, retry and awkward data (line breaks, U+2028, NUL, non-ASCII) survive."""
        data = "line one\nline two\r\n\u2028 \x00 ünïcode ✓"
        with broker.subscribe(["a"]) as sub:
            broker.publish("a", ServerSentEvent(data, event="update", retry=1500))
            (event,) = take(sub, 1)
        assert (event.data, event.event, event.retry) == (data, "update", 1500)

    def test_get_returns_an_empty_list_when_nothing_came(self, broker: Broker) -> None:
        """The empty list means: send a keepalive."""
        with broker.subscribe(["a"]) as sub:
            assert sub.get(0.05) == []


class TestReplay:
    def test_replays_the_events_after_the_last_event_id(self, broker: Broker) -> None:
        """A reconnecting client gets exactly what it missed, then live events."""
        ids = publish_all(broker, *[("a", str(n)) for n in range(5)])
        with broker.subscribe(["a"], last_event_id=ids[1]) as sub:
            publish_all(broker, ("a", "live"))
            events = take(sub, 4)
            assert sub.get(0.1) == []
        assert [e.data for e in events] == ["2", "3", "4", "live"]
        assert [e.id for e in events[:3]] == ids[2:]

    def test_multi_channel_replay_is_merged_in_publish_order(self, broker: Broker) -> None:
        """One cursor resumes every channel, and the replay is in id order."""
        pairs = [("a", "a1"), ("b", "b1"), ("c", "c1"), ("a", "a2"), ("b", "b2")]
        ids = publish_all(broker, *pairs)
        with broker.subscribe(["b", "a"], last_event_id=ids[0]) as sub:
            publish_all(broker, ("a", "a3"))
            events = take(sub, 4)
        assert [e.data for e in events] == ["b1", "a2", "b2", "a3"]

    def test_quiet_channel_resumes_from_a_busy_channels_id(self, broker: Broker) -> None:
        """An id from one channel is a valid cursor for another, even in the same millisecond."""
        ids = publish_all(broker, *[("busy", str(n)) for n in range(20)], ("quiet", "q"))
        with broker.subscribe(["busy", "quiet"], last_event_id=ids[19]) as sub:
            assert [e.data for e in take(sub, 1)] == ["q"]

    def test_cursor_of_the_newest_event_replays_nothing(self, broker: Broker) -> None:
        """Resuming from the newest id gives live events only, and no reset."""
        ids = publish_all(broker, ("a", "1"), ("a", "2"))
        with broker.subscribe(["a"], last_event_id=ids[-1]) as sub:
            assert sub.get(0.1) == []
            publish_all(broker, ("a", "3"))
            assert [e.data for e in take(sub, 1)] == ["3"]

    def test_cursor_resumes_from_the_moment_it_was_taken(self, broker: Broker) -> None:
        """cursor() marks "now", also before anything was ever published."""
        first = broker.cursor(["a"])
        publish_all(broker, ("a", "1"))
        second = broker.cursor(["a"])
        publish_all(broker, ("a", "2"))
        with broker.subscribe(["a"], last_event_id=first) as sub:
            assert [e.data for e in take(sub, 2)] == ["1", "2"]
        with broker.subscribe(["a"], last_event_id=second) as sub:
            assert [e.data for e in take(sub, 1)] == ["2"]
            assert sub.get(0.1) == []

    def test_unknown_cursor_gets_a_reset_first(self, broker: Broker) -> None:
        """A cursor the broker never issued starts with a reset that carries the newest id."""
        ids = publish_all(broker, ("a", "1"))
        assert broker.cursor(["a"]) == ids[0]
        with broker.subscribe(["a"], last_event_id="no-such-id") as sub:
            publish_all(broker, ("a", "live"))
            reset, live = take(sub, 2)
        assert (reset.event, reset.id) == ("reset", ids[0])
        assert json.loads(reset.data) == {"last_event_id": "no-such-id", "reason": "unknown"}
        assert live.data == "live"
        with broker.subscribe(["a"], last_event_id=reset.id) as again:
            assert [e.data for e in take(again, 1)] == ["live"]

    def test_expired_cursor_gets_a_reset_first(self, make_broker: BrokerFactory) -> None:
        """A cursor whose successors left the history gets a reset with the newest id."""
        broker = make_broker(history=5)
        first = publish_all(broker, ("a", "first"))[0]
        # Redis trims whole stream nodes (100 entries) at a time: go well past one.
        newest = publish_all(broker, *[("a", str(n)) for n in range(250)])[-1]
        with broker.subscribe(["a"], last_event_id=first) as sub:
            (reset,) = take(sub, 1)
            assert sub.get(0.05) == []
        assert (reset.event, reset.id) == ("reset", newest)
        assert json.loads(reset.data)["reason"] == "expired"

    def test_recent_cursor_still_replays_after_trimming(self, make_broker: BrokerFactory) -> None:
        """Trimming old events does not reset a client whose next events are kept."""
        broker = make_broker(history=5)
        ids = publish_all(broker, *[("a", str(n)) for n in range(250)])
        with broker.subscribe(["a"], last_event_id=ids[-3]) as sub:
            assert [e.data for e in take(sub, 2)] == ["248", "249"]

    def test_user_supplied_id_is_kept_and_resumes(self, broker: Broker) -> None:
        """An explicit id is the SSE id, and works as Last-Event-ID."""
        with broker.subscribe(["a"]) as sub:
            returned = broker.publish("a", ServerSentEvent("order", id="order-7"))
            (event,) = take(sub, 1)
        assert returned == event.id == "order-7"
        publish_all(broker, ("a", "after"))
        with broker.subscribe(["a"], last_event_id="order-7") as sub:
            assert [(e.event, e.data) for e in take(sub, 1)] == [(None, "after")]
            assert sub.get(0.1) == []


class TestExplicitIds:
    def test_an_explicit_id_never_takes_over_an_issued_one(self, broker: Broker) -> None:
        """Publishing with ``id=`` set to an id the broker issued earlier either is
        refused (ValueError, nothing sent) or leaves that id resuming from its own
        event: a client holding it never skips what came between."""
        (first,) = publish_all(broker, ("a", "1"))
        publish_all(broker, ("a", "2"), ("a", "3"))
        with broker.subscribe(["a"]) as live:
            try:
                broker.publish("a", ServerSentEvent("4", id=first))
            except ValueError:
                assert live.get(0.1) == []  # refused: nothing was sent
                expected = ["2", "3"]
            else:
                expected = ["2", "3", "4"]
        with broker.subscribe(["a"], last_event_id=first) as sub:
            assert [e.data for e in take(sub, len(expected))] == expected


class TestCursorScope:
    """A cursor is looked up only within the channels the stream subscribed to."""

    def test_an_explicit_id_of_another_channel_is_unknown(self, broker: Broker) -> None:
        """An id used only on ``private`` gets the same reset on ``public`` as a made-up
        one, so a reader of ``public`` cannot probe which ids ``private`` has."""
        broker.publish("private", ServerSentEvent("secret", id="order-42"))
        publish_all(broker, ("public", "p1"))
        resets = []
        for cursor in ("order-42", "order-43"):
            with broker.subscribe(["public"], last_event_id=cursor) as sub:
                (reset,) = take(sub, 1)
                assert sub.get(0.05) == []
            assert reset.event == "reset"
            resets.append((reset.id, json.loads(reset.data)))
        assert resets == [
            (resets[0][0], {"last_event_id": "order-42", "reason": "unknown"}),
            (resets[0][0], {"last_event_id": "order-43", "reason": "unknown"}),
        ]

    def test_an_explicit_id_resumes_a_stream_that_has_its_channel(self, broker: Broker) -> None:
        """Subscribed together with its channel, the same id resumes without a reset."""
        broker.publish("private", ServerSentEvent("secret", id="order-42"))
        publish_all(broker, ("public", "p1"), ("private", "s1"))
        with broker.subscribe(["public", "private"], last_event_id="order-42") as sub:
            assert [(e.event, e.data) for e in take(sub, 2)] == [(None, "p1"), (None, "s1")]

    def test_an_explicit_id_reused_elsewhere_resumes_from_this_channels_event(
        self, broker: Broker
    ) -> None:
        """The same explicit id on two channels: each stream resumes from its own
        channel's event, and a later use elsewhere does not move it past unseen events."""
        broker.publish("public", ServerSentEvent("p0", id="x"))
        publish_all(broker, ("public", "p1"))
        broker.publish("private", ServerSentEvent("s0", id="x"))
        publish_all(broker, ("public", "p2"))
        with broker.subscribe(["public"], last_event_id="x") as sub:
            assert [e.data for e in take(sub, 2)] == ["p1", "p2"]
            assert sub.get(0.05) == []

    def test_an_automatic_id_of_another_channel_is_a_position(self, broker: Broker) -> None:
        """A broker-issued id is a point in the one order of all channels: it resumes
        any channel from there, and tells no more than the reset's newest id would."""
        ids = publish_all(broker, ("public", "p1"), ("private", "s1"), ("public", "p2"))
        with broker.subscribe(["public"], last_event_id=ids[1]) as sub:
            assert [(e.event, e.data) for e in take(sub, 1)] == [(None, "p2")]
            assert sub.get(0.05) == []


class TestEnding:
    def test_overflow_ends_the_slow_client_only(self, make_broker: BrokerFactory) -> None:
        """A client that falls queue_size behind gets SubscriptionClosed("overflow")."""
        broker = make_broker(queue_size=3)
        with broker.subscribe(["a"]) as slow, broker.subscribe(["a"]) as fast:
            ids = []
            for n in range(6):
                ids += publish_all(broker, ("a", str(n)))
                take(fast, 1)  # when fast has it, slow was offered it too
            with pytest.raises(SubscriptionClosed) as closed:
                slow.get(1.0)
            assert (closed.value.reason, closed.value.reconnect) == ("overflow", True)
            assert broker.subscriber_count() == 1
        # It resumes through the replay, which the queue bound does not limit.
        with broker.subscribe(["a"], last_event_id=ids[0]) as again:
            assert [e.data for e in take(again, 5)] == ["1", "2", "3", "4", "5"]

    def test_subscriber_count_follows_subscriptions(self, broker: Broker) -> None:
        """Closing (twice is fine) brings the count back to zero."""
        assert broker.subscriber_count() == 0
        one = broker.subscribe(["a"])
        two = broker.subscribe(["a", "b"])
        assert broker.subscriber_count() == 2
        one.close()
        one.close()
        assert broker.subscriber_count() == 1
        two.close()
        assert broker.subscriber_count() == 0
        with pytest.raises(SubscriptionClosed):
            two.get(0.01)

    def test_closing_the_broker_ends_open_subscriptions(self, broker: Broker) -> None:
        """close() releases everything; waiting clients wake with SubscriptionClosed."""
        sub = broker.subscribe(["a"])
        woken: list[BaseException] = []

        def wait() -> None:
            deadline = time.monotonic() + 5.0
            try:
                while time.monotonic() < deadline:
                    sub.get(5.0)
            except SubscriptionClosed as exc:
                woken.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        broker.close()
        waiter.join(5.0)
        assert len(woken) == 1
        assert broker.subscriber_count() == 0


class TestHealth:
    def test_ping_passes_and_nothing_reconnected(self, broker: Broker) -> None:
        """A reachable backend answers ping(), before and after use; a fresh broker
        has not reconnected."""
        broker.ping()
        with broker.subscribe(["a"]) as sub:
            publish_all(broker, ("a", "x"))
            take(sub, 1)
        broker.ping()
        assert broker.reconnects == 0


class TestHandover:
    def test_reconnecting_clients_see_every_id_once_in_order(self, broker: Broker) -> None:
        """Replay hands over to live without loss or repeats, while publishing never stops."""
        published: list[str] = []

        def publish(n: int) -> None:
            published.append(broker.publish("ab"[n % 2], ServerSentEvent(str(n))))

        views = reconnecting_clients(broker, ["a", "b"], publish, 400)
        assert len(published) == 400
        for seen in views:
            # Each event once, and each channel in publish order. (Across channels
            # the order is the broker's: Redis Cluster has no clock shared by shards.)
            assert sorted(seen, key=int) == [str(n) for n in range(400)]
            for parity in (0, 1):
                mine = [data for data in seen if int(data) % 2 == parity]
                assert mine == [str(n) for n in range(parity, 400, 2)]


class _Refusing:
    """A consumer that can never defer a job (a publisher in another OS thread):
    the broker must then wake the reader, every time."""

    def defer(self, job: t.Callable[[], None]) -> bool:
        return False

    def take(self, events: list[ServerSentEvent]) -> bool:
        raise AssertionError("a job that was never deferred ran")


def _read_into(subscription: Subscription, got: list[ServerSentEvent]) -> None:
    got.extend(subscription.get(5))


class TestConsumer:
    @pytest.mark.parametrize("channels", [["a"], ["a", "b"]])
    def test_a_reader_whose_consumer_cannot_defer_is_woken_every_time(
        self, broker: Broker, channels: list[str]
    ) -> None:
        with broker.subscribe(channels) as sub:
            if not sub.set_consumer(_Refusing()):
                pytest.skip("this broker hands no events to consumers")
            for attempt in range(3):
                got: list[ServerSentEvent] = []
                reader = threading.Thread(target=functools.partial(_read_into, sub, got))
                reader.start()
                time.sleep(0.1)  # the reader waits in get()
                publish_all(broker, (channels[-1], f"attempt {attempt}"))
                reader.join(3)
                assert not reader.is_alive(), f"attempt {attempt}: the reader was not woken"
                # (A multi-channel stream's ids are the broker's resume points, not
                # necessarily publish()'s: compare the data.)
                assert [e.data for e in got] == [f"attempt {attempt}"]


class _Deferring:
    """A consumer whose deferred jobs run when the test lets them (the publisher
    yields); ``take`` takes whole batches, or (``whole=False``) only part of each."""

    def __init__(self, *, whole: bool = True) -> None:
        self.whole = whole
        self.jobs: list[t.Callable[[], None]] = []
        self.taken: list[ServerSentEvent] = []
        self._lock = threading.Lock()

    def defer(self, job: t.Callable[[], None]) -> bool:
        with self._lock:
            self.jobs.append(job)
        return True

    def take(self, events: list[ServerSentEvent]) -> bool:
        self.taken.extend(events)
        return self.whole

    def run_jobs(self) -> None:
        with self._lock:
            jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


class _Wakes:
    """The ``wake`` a parked subscription calls: counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.called.set()


def _until(consumer: _Deferring | None, done: t.Callable[[], bool], timeout: float = 5.0) -> bool:
    """Run the consumer's deferred jobs until ``done()``; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consumer is not None:
            consumer.run_jobs()
        if done():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("channels", [["a"], ["a", "b"]])
class TestPark:
    """A subscription that waits without a reader (a parked stream)."""

    def test_it_parks_only_with_a_consumer_and_nothing_ready(
        self, broker: Broker, channels: list[str]
    ) -> None:
        with broker.subscribe(channels) as sub:
            assert sub.parks
            assert not sub.park(_Wakes()), "parked without a consumer to take events"
            consumer = _Deferring()
            assert sub.set_consumer(consumer)
            publish_all(broker, (channels[-1], "ready"))
            assert _until(None, lambda: sub.pending() == 1)
            assert not sub.park(_Wakes()), "parked with an event ready"
            assert [e.data for e in sub.get(0)] == ["ready"]
            assert sub.park(_Wakes())

    def test_events_go_to_the_consumer_and_the_reader_sleeps_on(
        self, broker: Broker, channels: list[str]
    ) -> None:
        with broker.subscribe(channels) as sub:
            consumer = _Deferring()
            sub.set_consumer(consumer)
            wakes = _Wakes()
            assert sub.park(wakes)
            publish_all(broker, *[(channels[n % len(channels)], str(n)) for n in range(3)])
            assert _until(consumer, lambda: len(consumer.taken) == 3)
            assert [e.data for e in consumer.taken] == ["0", "1", "2"]
            assert wakes.calls == 0
            assert sub.get(0) == []  # ends the park; nothing is left for the reader

    def test_a_consumer_that_takes_part_wakes_the_reader_once(
        self, broker: Broker, channels: list[str]
    ) -> None:
        with broker.subscribe(channels) as sub:
            consumer = _Deferring(whole=False)
            sub.set_consumer(consumer)
            wakes = _Wakes()
            assert sub.park(wakes)
            publish_all(broker, (channels[-1], "first"))
            assert _until(consumer, lambda: wakes.calls > 0)
            publish_all(broker, (channels[-1], "second"))
            assert _until(None, lambda: sub.pending() == 1)
            assert wakes.calls == 1, "a parked reader is woken once, until it reads"
            assert [e.data for e in consumer.taken] == ["first"]
            assert [e.data for e in sub.get(0)] == ["second"]

    def test_a_consumer_that_cannot_defer_wakes_the_reader(
        self, broker: Broker, channels: list[str]
    ) -> None:
        with broker.subscribe(channels) as sub:
            sub.set_consumer(_Refusing())
            for attempt in range(3):
                wakes = _Wakes()
                assert sub.park(wakes)
                publish_all(broker, (channels[-1], f"attempt {attempt}"))
                assert wakes.called.wait(5), f"attempt {attempt}: the parked reader was not woken"
                assert [e.data for e in sub.get(0)] == [f"attempt {attempt}"]
                assert wakes.calls == 1

    def test_closing_it_wakes_the_reader_which_learns_it_ended(
        self, broker: Broker, channels: list[str]
    ) -> None:
        sub = broker.subscribe(channels)
        sub.set_consumer(_Deferring())
        wakes = _Wakes()
        assert sub.park(wakes)
        sub.close()
        assert wakes.calls == 1
        with pytest.raises(SubscriptionClosed):
            sub.get(0)
