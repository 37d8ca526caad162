"""The memory broker's ids under a real ``gunicorn --preload -k gevent``: a worker
that replaces another never reissues its ids, so a stale cursor gets a reset."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from tests.support.raw_client import RawStream, Received, pump
from tests.support.servers import Gunicorn, gunicorn

pytestmark = pytest.mark.integration

APP = "tests.apps.lifecycle_app:create_app()"


def _worker_pid(server: Gunicorn) -> int | None:
    """The pid of the worker that answers, or None while none does."""
    try:
        reply = httpx.get(f"{server.url}/stats", timeout=5)
    except httpx.HTTPError:
        return None
    pid: int = reply.json()["pid"]
    return pid


def _publish(server: Gunicorn, count: int) -> list[str]:
    reply = httpx.post(f"{server.url}/publish", json={"data": "x", "count": count}, timeout=10)
    reply.raise_for_status()
    ids: list[str] = reply.json()["ids"]
    return ids


def _new_worker(server: Gunicorn, old_pid: int) -> int:
    """Wait until a worker other than ``old_pid`` answers; return its pid."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = _worker_pid(server)
        if pid is not None and pid != old_pid:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"no new worker within 30 s:\n{server.output()[-2000:]}")


def _resume(server: Gunicorn, cursor: str) -> Received:
    """The first event a stream resuming from ``cursor`` gets."""
    stream = RawStream(server.port, "/events?channel=default", {"Last-Event-ID": cursor})
    try:
        assert pump([stream], lambda: bool(stream.events), 10), stream.body
        return stream.events[0]
    finally:
        stream.close()


def _check_new_worker_resets_old_cursor(server: Gunicorn, old_pid: int, old: list[str]) -> None:
    new = _publish(server, 8)
    assert not set(old) & set(new), f"the new worker reissued ids: {old} / {new}"
    first = _resume(server, old[-1])
    assert first.event == "reset", f"resumed from a stale cursor without a reset: {first}"
    assert json.loads(first.data) == {"last_event_id": old[-1], "reason": "unknown"}
    assert first.id == new[-1]


def test_a_worker_forked_after_a_kill_issues_new_ids() -> None:
    """kill -9 the worker: the master forks a new one from the preloaded app."""
    with gunicorn(APP, extra_args=("--preload",)) as server:
        pid = _worker_pid(server)
        assert pid is not None
        old = _publish(server, 5)
        os.kill(pid, signal.SIGKILL)
        _new_worker(server, pid)
        _check_new_worker_resets_old_cursor(server, pid, old)


def test_a_recycled_worker_issues_new_ids() -> None:
    """--max-requests: the master replaces the worker after a few requests."""
    with gunicorn(APP, extra_args=("--preload", "--max-requests", "5")) as server:
        pid = _worker_pid(server)
        assert pid is not None
        old = _publish(server, 5)
        _new_worker(server, pid)  # the polling itself uses up the requests
        _check_new_worker_resets_old_cursor(server, pid, old)
