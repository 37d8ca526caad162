"""Behaviour specific to the in-memory broker (the shared contract is in
test_broker_contract.py)."""

from __future__ import annotations

import gc
import json
import threading
import tracemalloc
import typing as t

from flask_sse_push import MemoryBroker, ServerSentEvent, Subscription, SubscriptionClosed


def _ids(events: list[ServerSentEvent]) -> list[str | None]:
    return [event.id for event in events]


def test_ids_are_monotonic_across_channels() -> None:
    broker = MemoryBroker()
    ids = [broker.publish(name, ServerSentEvent("x")) for name in ("a", "b", "a")]
    numbers = [int(event_id.rpartition("-")[2]) for event_id in ids]
    assert numbers == [1, 2, 3]
    assert len({event_id.partition("-")[0] for event_id in ids}) == 1


def test_a_new_broker_does_not_accept_an_old_brokers_cursor() -> None:
    """After a restart the same number means a different event: reset instead."""
    old, new = MemoryBroker(), MemoryBroker()
    cursor = old.publish("a", ServerSentEvent("x"))
    new.publish("a", ServerSentEvent("y"))
    subscription = new.subscribe(["a"], last_event_id=cursor)
    (reset,) = subscription.get(0)
    assert reset.event == "reset"
    assert json.loads(reset.data) == {"last_event_id": cursor, "reason": "unknown"}
    subscription.close()


def test_trimmed_history_gives_expired_reset_with_head_id() -> None:
    broker = MemoryBroker(history=2)
    first = broker.publish("a", ServerSentEvent("1"))
    for n in range(2, 5):
        last = broker.publish("a", ServerSentEvent(str(n)))
    subscription = broker.subscribe(["a"], last_event_id=first)
    (reset,) = subscription.get(0)
    assert (reset.event, reset.id, json.loads(reset.data)["reason"]) == ("reset", last, "expired")
    subscription.close()


def test_cursor_inside_history_replays_exactly_the_rest() -> None:
    broker = MemoryBroker(history=3)
    ids = [broker.publish("a", ServerSentEvent(str(n))) for n in range(5)]
    subscription = broker.subscribe(["a"], last_event_id=ids[2])
    assert _ids(subscription.get(0)) == ids[3:]
    subscription.close()


def test_history_keeps_exactly_its_size_as_it_grows() -> None:
    """Short and long histories alike keep the newest ``history`` events."""
    for size in (1, 31, 32, 33, 100):
        broker = MemoryBroker(history=size)
        ids = [broker.publish("a", ServerSentEvent(str(n))) for n in range(150)]
        with broker.subscribe(["a"], last_event_id=ids[-size - 1]) as sub:
            assert _ids(sub.get(0)) == ids[-size:]
        with broker.subscribe(["a"], last_event_id=ids[-size - 2]) as sub:
            assert json.loads(sub.get(0)[0].data)["reason"] == "expired"


def test_user_ids_resume_until_they_leave_the_history() -> None:
    broker = MemoryBroker(history=2)
    broker.publish("a", ServerSentEvent("1", id="first"))
    broker.publish("a", ServerSentEvent("2", id="second"))
    subscription = broker.subscribe(["a"], last_event_id="first")
    assert _ids(subscription.get(0)) == ["second"]
    subscription.close()
    broker.publish("a", ServerSentEvent("3", id="third"))
    subscription = broker.subscribe(["a"], last_event_id="first")
    assert subscription.get(0)[0].event == "reset"
    subscription.close()


def test_subscribing_to_unpublished_channels_leaves_nothing_behind() -> None:
    """Clients cannot grow the broker's memory by inventing channel names."""
    broker = MemoryBroker()
    for n in range(100):
        broker.subscribe([f"made-up-{n}"]).close()
    assert broker._here()._channels == {}
    assert broker.subscriber_count() == 0


def test_overflow_ends_only_the_slow_subscription() -> None:
    broker = MemoryBroker(queue_size=3)
    slow = broker.subscribe(["a"])
    fast = broker.subscribe(["a"])
    for n in range(5):
        broker.publish("a", ServerSentEvent(str(n)))
        assert len(fast.get(0)) == 1
    try:
        slow.get(0)
    except SubscriptionClosed as closed:
        assert (closed.reason, closed.reconnect) == ("overflow", True)
    else:
        raise AssertionError("the slow subscription should have been ended")
    assert broker.subscriber_count() == 1
    fast.close()


def test_get_wakes_up_for_a_publish_from_another_thread() -> None:
    broker = MemoryBroker()
    subscription = broker.subscribe(["a"])
    timer = threading.Timer(0.05, broker.publish, ("a", ServerSentEvent("late")))
    timer.start()
    events = subscription.get(5)
    timer.join()
    assert [event.data for event in events] == ["late"]
    subscription.close()


def test_concurrent_publishers_and_resuming_readers_lose_nothing() -> None:
    """Replay and the switch to live are atomic, even with threads publishing:
    a reader that reconnects after every batch sees every id once, in order."""
    broker = MemoryBroker(history=10_000, queue_size=10_000)
    watcher = broker.subscribe(["a"])
    cursor = broker.cursor(["a"])
    total = 4 * 500

    def publish() -> None:
        for n in range(500):
            broker.publish("a", ServerSentEvent(str(n)))

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for thread in threads:
        thread.start()
    received: list[str | None] = []
    for _ in range(10 * total):
        if len(received) >= total:
            break
        with broker.subscribe(["a"], last_event_id=cursor) as subscription:
            batch = subscription.get(0.5)[:7]  # reconnect often, mid-backlog
        received.extend(_ids(batch))
        if batch and batch[-1].id is not None:
            cursor = batch[-1].id
    for thread in threads:
        thread.join()
    order = _ids(watcher.get(0))
    assert len(order) == total
    assert received == order
    assert broker.subscriber_count() == 1
    watcher.close()


def test_close_ends_open_subscriptions() -> None:
    broker = MemoryBroker()
    subscription = broker.subscribe(["a", "b"])
    broker.close()
    try:
        subscription.get(0)
    except SubscriptionClosed as closed:
        assert closed.reason == "broker closed"
    else:
        raise AssertionError("close() should end open subscriptions")
    assert broker.subscriber_count() == 0


def _reset_reason(subscription: Subscription) -> str | None:
    """The reason of the ``reset`` a subscription starts with, or None without one."""
    events = subscription.get(0)
    if not events or events[0].event != "reset":
        return None
    reason: str = json.loads(events[0].data)["reason"]
    return reason


#: Where what the memory broker keeps is allocated: its own modules, the event type,
#: and this module (the events the tests make). Other threads of the test process
#: (a Redis listener or control thread another test left) allocate elsewhere.
_KEPT_BY = [
    tracemalloc.Filter(True, "*/flask_sse_push/brokers/memory/*"),
    tracemalloc.Filter(True, "*/flask_sse_push/event.py"),
    tracemalloc.Filter(True, "*/flask_sse_push/encoding.py"),
    tracemalloc.Filter(True, __file__),
]


def _allocated_growth(action: t.Callable[[], object]) -> int:
    """Bytes that ``action`` left allocated (tracemalloc) by the memory broker, the
    event type and this module, after a collection."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(_KEPT_BY)
        action()
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(_KEPT_BY)
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


class TestMemoryBound:
    def test_explicit_ids_without_history_are_not_kept(self) -> None:
        """With history=0, 20,000 explicit ids leave nothing behind: there is nothing
        to replay, so nothing to look up (it grew by one entry per id)."""
        broker = MemoryBroker(history=0)
        with broker.subscribe(["a"]) as reader:

            def publish() -> None:
                for n in range(20_000):
                    broker.publish("a", ServerSentEvent("x", id=f"order-{n}"))
                    reader.get(0)

            assert _allocated_growth(publish) < 64 * 1024

    def test_explicit_ids_are_bounded_by_the_history(self) -> None:
        """With history, what is kept for explicit ids is what the history holds."""
        broker = MemoryBroker(history=10)
        for n in range(100):
            broker.publish("a", ServerSentEvent("x", id=f"warm-{n}"))

        def publish() -> None:
            for n in range(20_000):
                broker.publish("a", ServerSentEvent("x", id=f"order-{n}"))

        assert _allocated_growth(publish) < 64 * 1024
        with broker.subscribe(["a"], last_event_id="order-19990") as sub:
            assert [e.id for e in sub.get(0)] == [f"order-{n}" for n in range(19_991, 20_000)]

    def test_unread_channels_without_history_cost_nothing(self) -> None:
        """20,000 channels published to once and never read are not kept (each kept
        a channel object before, about 1.2 KiB)."""
        broker = MemoryBroker(history=0)

        def publish() -> None:
            for n in range(20_000):
                broker.publish(f"channel-{n}", ServerSentEvent("x"))

        assert _allocated_growth(publish) < 64 * 1024
        assert broker._here()._channels == {}

    def test_an_unread_channel_with_history_keeps_little_beyond_its_events(self) -> None:
        """A channel published to once keeps its one event and a small record: under
        1 KiB with the event (745 bytes measured; a preallocated deque made it 1.4 KiB)."""
        broker = MemoryBroker(history=1000)
        names = [f"channel-{n}" for n in range(20_000)]
        events = [ServerSentEvent("x") for _ in names]

        def publish() -> None:
            for name, event in zip(names, events, strict=True):
                broker.publish(name, event)

        assert _allocated_growth(publish) / len(names) < 1024

    def test_a_channel_its_last_subscriber_left_is_forgotten(self) -> None:
        """Without history, a channel that was published to is freed with its last reader."""
        broker = MemoryBroker(history=0)
        for n in range(100):
            with broker.subscribe([f"room-{n}", "lobby"]):
                broker.publish(f"room-{n}", ServerSentEvent("x"))
                broker.publish("lobby", ServerSentEvent("x"))
        assert broker._here()._channels == {}

    def test_a_forgotten_channel_still_answers_old_cursors_with_expired(self) -> None:
        """Forgetting a channel never lets a cursor skip what was published after it:
        over many channels (more than the watermark table has slots), a cursor from
        before a channel's last event gets an expired reset."""
        broker = MemoryBroker(history=0)
        names = [f"c{n}" for n in range(3000)]
        before = {}
        for name in names:
            with broker.subscribe([name]) as sub:
                before[name] = broker.publish(name, ServerSentEvent("seen"))
                sub.get(0)
        for name in names:
            broker.publish(name, ServerSentEvent("missed"))
        for name in names:
            with broker.subscribe([name], last_event_id=before[name]) as sub:
                assert _reset_reason(sub) == "expired", name

    def test_a_forgotten_channel_resumes_a_cursor_that_missed_nothing(self) -> None:
        """The watermark resets only what may have been missed: the newest id of a
        quiet forgotten channel resumes without a reset."""
        broker = MemoryBroker(history=0)
        with broker.subscribe(["a"]) as sub:
            last = broker.publish("a", ServerSentEvent("seen"))
            sub.get(0)
        assert broker._here()._channels == {}
        with broker.subscribe(["a"], last_event_id=last) as sub:
            assert _reset_reason(sub) is None
            broker.publish("a", ServerSentEvent("live"))
            assert [e.data for e in sub.get(0)] == ["live"]
