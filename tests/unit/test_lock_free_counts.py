"""Per-batch paths stay exact with real threads switching often: a memory broker
reader taking batches while others publish, and the lock-free delivery count."""

from __future__ import annotations

import functools
import sys
import threading
import typing as t

from flask_sse_push import MemoryBroker, ServerSentEvent
from flask_sse_push.connections import StreamRegistry
from flask_sse_push.metrics import Metrics

if t.TYPE_CHECKING:
    from collections.abc import Callable


def _run_with_frequent_switches(targets: list[Callable[[], None]]) -> None:
    """Run ``targets`` in threads that the interpreter switches between often."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=target) for target in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        sys.setswitchinterval(interval)


def test_a_reader_taking_batches_during_publishes_gets_each_event_once() -> None:
    broker = MemoryBroker(history=0, queue_size=100_000)
    subscription = broker.subscribe(["a"])
    publishers, each = 3, 3000
    received: list[str] = []

    def publish(name: int) -> None:
        for n in range(each):
            broker.publish("a", ServerSentEvent(f"{name}:{n}"))

    def read() -> None:
        for _ in range(100 * publishers * each):
            if len(received) >= publishers * each:
                return
            received.extend(event.data for event in subscription.get(1))

    targets: list[Callable[[], None]] = [read]
    targets += [functools.partial(publish, name) for name in range(publishers)]
    _run_with_frequent_switches(targets)
    subscription.close()
    assert len(received) == publishers * each
    for name in range(publishers):
        mine = [data for data in received if data.startswith(f"{name}:")]
        assert mine == [f"{name}:{n}" for n in range(each)]


def test_delivery_counts_from_many_threads_add_up_exactly() -> None:
    metrics = Metrics()
    broker = MemoryBroker()
    registry = StreamRegistry(max_connections=None, send_timeout=30.0, retry=None)
    threads, batches = 4, 2000
    seen: list[int] = []

    def deliver() -> None:
        for n in range(batches):
            metrics.delivered(3, 1 if n % 500 == 0 else 0)

    def watch() -> None:
        for _ in range(200):
            seen.append(metrics.snapshot(broker, registry)["deliveries"])

    targets: list[Callable[[], None]] = [deliver] * threads
    targets.append(watch)
    _run_with_frequent_switches(targets)
    stats = metrics.snapshot(broker, registry)
    assert stats["deliveries"] == threads * batches * 3
    assert stats["resets"] == threads * (batches // 500)
    assert seen == sorted(seen)
