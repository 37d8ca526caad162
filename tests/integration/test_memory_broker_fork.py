"""The in-memory broker across ``os.fork()``: a child starts with a new epoch and
none of its parent's subscribers or locks."""

from __future__ import annotations

import json
import os
import signal
import time
import typing as t

import pytest

from flask_sse_push import MemoryBroker, ServerSentEvent, Subscription
from flask_sse_push.brokers.memory import _state as _memory_state


def _reset_reason(subscription: Subscription) -> str | None:
    """The reason of the ``reset`` a subscription starts with, or None without one."""
    events = subscription.get(0)
    if not events or events[0].event != "reset":
        return None
    reason: str = json.loads(events[0].data)["reason"]
    return reason


def _in_child(work: t.Callable[[], object]) -> t.Any:
    """Run ``work`` in a forked child; return its JSON result, or fail after 10 s."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            signal.alarm(10)  # a deadlocked child must not hang the suite
            os.write(write_end, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed or hung"
    return json.loads(output)


class TestFork:
    def test_a_forked_child_issues_ids_its_parent_never_did(self) -> None:
        """After os.fork() the child gets a new epoch: the parent's cursor is unknown
        to it, and neither reissues the other's ids."""
        broker = MemoryBroker()
        parent_ids = [broker.publish("a", ServerSentEvent(str(n))) for n in range(5)]

        def child() -> object:
            ids = [broker.publish("a", ServerSentEvent(str(n))) for n in range(8)]
            with broker.subscribe(["a"], last_event_id=parent_ids[-1]) as sub:
                return {"ids": ids, "reason": _reset_reason(sub)}

        result = _in_child(child)
        assert result["reason"] == "unknown"
        later = [broker.publish("a", ServerSentEvent(str(n))) for n in range(8)]
        assert len({*parent_ids, *result["ids"], *later}) == 5 + 8 + 8

    def test_a_forked_child_starts_without_the_parents_state(self) -> None:
        """The child does not inherit the parent's subscribers, or its lock held by a
        thread that does not exist in the child."""
        broker = MemoryBroker()
        with broker.subscribe(["a"]):
            lock = broker._here()._lock
            with lock:  # held by this thread while it forks

                def child() -> object:
                    event_id = broker.publish("a", ServerSentEvent("x"))
                    return [broker.subscriber_count(), event_id]

                count, event_id = _in_child(child)
            assert count == 0
            assert event_id.endswith("-1")
            assert broker.subscriber_count() == 1

    def test_epochs_differ_within_one_millisecond(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Processes started in the same millisecond (workers forked together, or a
        crash-restart that reuses a pid) still get different epochs."""
        monkeypatch.setattr(time, "time_ns", lambda: 1_764_000_000_000_000_000)
        # Same pid and millisecond: the random bits differ (1 in 16.7 million).
        parent = [_memory_state.new_epoch(), _memory_state.new_epoch()]
        # Same millisecond, another pid: they differ always.
        child = _in_child(_memory_state.new_epoch)
        assert len({*parent, child}) == 3
