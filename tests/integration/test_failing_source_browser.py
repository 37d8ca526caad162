"""In Chromium: a source that fails before its first event stops ``EventSource``."""

from __future__ import annotations

import re
import signal
import time
import typing as t

import pytest

from tests.support.servers import start_gunicorn, stop

if t.TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.integration


def _requests(log: str) -> list[str]:
    """The statuses of the ``/orders/live`` requests gunicorn logged."""
    return re.findall(r'"GET /orders/live HTTP/1\.1" (\d{3})', log)


def test_eventsource_stops_instead_of_reconnecting_forever(browser: Browser) -> None:
    """Before: ``: closed: source error`` with a ``retry:``, and a reconnect every 1-3 s."""
    server = start_gunicorn("tests.apps.failing_source_app:create_app()")
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("window.states.includes('closed')", timeout=15_000)
        # Longer than the 1-3 s a reconnect would wait.
        time.sleep(4)
        states = page.evaluate("window.states")
        page.close()
        deadline = time.monotonic() + 5
        while len(_requests(server.output())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _requests(server.output()) == ["200", "204"]
        assert states == ["open", "retrying", "closed"]
        assert server.output().count("Working outside of application context") == 1
    finally:
        stop(server.process, signal.SIGQUIT)
