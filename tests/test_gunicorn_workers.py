"""What the extension says about the gunicorn worker class it finds itself in."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.servers import gunicorn

pytestmark = pytest.mark.integration

#: The start of the warning :meth:`flask_sse_push.SSEPush.init_app` logs.
SYNC_WARNING = "gunicorn runs its sync worker, which serves one request at a time"


def _booted_output(worker_class: str) -> str:
    """Serve the example app with ``-k worker_class``; return gunicorn's log once
    the app is loaded (the first request has been answered)."""
    with gunicorn(extra_args=("-k", worker_class)) as server:
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
    so at startup and names the extra and the ``-k gevent`` to use instead."""
    output = _booted_output("sync")
    assert "Using worker: sync" in output
    assert SYNC_WARNING in output
    assert "pip install 'flask-sse-push[gevent]'" in output
    assert "gunicorn -k gevent" in output


def test_gevent_worker_gets_no_warning() -> None:
    output = _booted_output("gevent")
    assert "Using worker: gevent" in output
    assert SYNC_WARNING not in output
