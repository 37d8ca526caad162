"""Behaviour specific to the in-memory broker (the shared contract is in
test_broker_contract.py)."""

from __future__ import annotations

import json
import threading

from flask_sse_push import MemoryBroker, ServerSentEvent, SubscriptionClosed


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


def test_user_ids_resume_until_they_leave_the_history() -> None:
    broker = MemoryBroker(history=2)
    broker.publish("a", ServerSentEvent("1", id="first"))
    broker.publish("a", ServerSentEvent("2", id="second"))
    subscription = broker.subscribe(["a"], last_event_id="first")
    assert _ids(subscription.get(0)) == ["second"]
    subscription.close()
    broker.publish("a", ServerSentEvent("3", id="third"))
    assert "first" not in broker._user_ids
    subscription = broker.subscribe(["a"], last_event_id="first")
    assert subscription.get(0)[0].event == "reset"
    subscription.close()


def test_subscribing_to_unpublished_channels_leaves_nothing_behind() -> None:
    """Clients cannot grow the broker's memory by inventing channel names."""
    broker = MemoryBroker()
    for n in range(100):
        broker.subscribe([f"made-up-{n}"]).close()
    assert broker._channels == {}
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
