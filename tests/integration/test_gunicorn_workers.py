"""What the extension says about the gunicorn worker class it finds itself in."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.servers import gunicorn

pytestmark = pytest.mark.integration

#: Part of the warning the extension logs on a threaded server (sync is one).
SYNC_WARNING = "every open stream holds one thread for its whole life"


def _booted_output(worker_class: str) -> str:
    """Serve the example app with ``-k worker_class``; return gunicorn's log once
    the app is loaded (the first request has been answered)."""
    with gunicorn(worker=worker_class) as server:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{server.url}/", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.1)
        return server.output()


def test_sync_worker_gets_our_warning_with_the_fix() -> None:
    """Under ``-k sync`` every open stream holds a whole worker: the extension says
    so at startup and names the extra and the worker class to use instead."""
    output = _booted_output("sync")
    assert "Using worker: sync" in output
    assert SYNC_WARNING in output
    assert "pip install 'flask-sse-push[gevent]'" in output
    assert "gunicorn -k flask_sse_push.servers.gunicorn.GeventWorker" in output


@pytest.mark.parametrize("worker", ["gevent", "flask_sse_push.servers.gunicorn.GeventWorker"])
def test_gevent_workers_get_no_warning(worker: str) -> None:
    output = _booted_output(worker)
    assert f"Using worker: {worker}" in output
    assert SYNC_WARNING not in output
