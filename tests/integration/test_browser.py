"""The example app in headless Chromium, under the package's gunicorn worker class.

What the page shows is checked through the DOM; what the server did (how many
stream requests it saw) through gunicorn's access log. With
``SSE_PUSH_WRITE_SCREENSHOT=1``, the countdown test saves ``docs/screenshot.png``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import typing as t
import urllib.parse
import uuid

import httpx
import pytest

from tests.apps.env_app import environment
from tests.support.browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    StaticPage,
    assert_full_countdown,
    countdown_patterns,
)
from tests.support.servers import ROOT, Gunicorn, RedisServer, start_gunicorn, stop

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Set to save ``docs/screenshot.png``: the countdown then runs at the app's default pace.
WRITE_SCREENSHOT = os.environ.get("SSE_PUSH_WRITE_SCREENSHOT") == "1"

#: Seconds between the countdown's numbered messages (the app's default is 1.0).
INTERVAL = 1.0 if WRITE_SCREENSHOT else 0.2

#: Where ``SSE_PUSH_WRITE_SCREENSHOT=1`` saves the page after a full countdown.
SCREENSHOT = ROOT / "docs" / "screenshot.png"


def stream_requests(log: str) -> int:
    """The countdown stream requests gunicorn logged (it logs each when it ends)."""
    return len(re.findall(r'"GET /api/sse HTTP/1\.1" ', log))


def wait_for(condition: t.Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@contextlib.contextmanager
def serving(
    app: str = "example_app:create_app()",
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Gunicorn]:
    """Run gunicorn for the ``with`` block, and stop it at once after."""
    server = start_gunicorn(app, env=env, port=port)
    try:
        yield server
    finally:
        # A stream whose page has closed stays open on the server until its next
        # keepalive; a graceful stop would wait for it.
        stop(server.process, signal.SIGQUIT)


@pytest.fixture(scope="module")
def example() -> Iterator[Gunicorn]:
    """The example app with a fast countdown."""
    with serving(env={"COUNTDOWN_INTERVAL": str(INTERVAL)}) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 760})
    try:
        yield context.new_page()
    finally:
        context.close()


def open_page(page: Page, server: Gunicorn) -> Page:
    from playwright.sync_api import expect

    page.goto(server.url)
    # The page's broker stream is open, so its requests do not race the test's.
    expect(page.locator("#push-state")).to_have_text("open")
    return page


def test_connect_shows_the_countdown_and_the_end_closes_it(example: Gunicorn, page: Page) -> None:
    """Connect lists the nine events in order with their ids; ``end`` closes the
    EventSource, and the server sees no reconnect."""
    from playwright.sync_api import expect

    logged_before = stream_requests(example.output())
    open_page(page, example)
    page.click("#connect")
    items = page.locator("#messages li")
    expect(items).to_have_count(9, timeout=10_000)
    expect(page.locator("#state")).to_have_text("closed")
    assert page.evaluate("source.readyState") == 2
    assert_full_countdown(items.all_text_contents())
    wait_for(
        lambda: stream_requests(example.output()) > logged_before,
        10,
        "gunicorn did not log the finished countdown stream",
    )
    time.sleep(1.5)  # longer than the example's retry: 1000, time for a reconnect
    assert stream_requests(example.output()) - logged_before == 1
    expect(items).to_have_count(9)
    if WRITE_SCREENSHOT:
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_disconnect_stops_the_countdown_and_clear_empties_it(example: Gunicorn, page: Page) -> None:
    """After Disconnect mid-countdown no item arrives; Clear empties the list."""
    from playwright.sync_api import expect

    open_page(page, example)
    page.click("#connect")
    items = page.locator("#messages li")
    expect(items.nth(3)).to_be_visible(timeout=10_000)
    page.click("#disconnect")
    shown = items.count()
    assert shown < 9, "the countdown finished before Disconnect: nothing was tested"
    expect(page.locator("#state")).to_have_text("closed")
    assert page.evaluate("source.readyState") == 2
    time.sleep(5 * INTERVAL)
    assert items.count() == shown
    assert_full_countdown_prefix(items.all_text_contents())
    page.click("#clear")
    expect(items).to_have_count(0)


def assert_full_countdown_prefix(items: list[str]) -> None:
    for item, pattern in zip(items, countdown_patterns()[: len(items)], strict=True):
        assert pattern.fullmatch(item), f"{item!r} does not match {pattern.pattern!r}"


_RECORD_ARRIVALS = """() => {
    window.arrivals = [];
    pushed.addEventListener("message", (event) => arrivals.push([event.data, Date.now()]));
    document.getElementById("publish-form").addEventListener(
        "submit", () => { window.submitted = Date.now(); }, { capture: true });
}"""


def test_publishing_from_one_page_shows_on_both(example: Gunicorn, browser: Browser) -> None:
    """A message published from one page's form reaches both pages within 1 s."""
    from playwright.sync_api import expect

    contexts = [browser.new_context() for _ in range(2)]
    try:
        pages = [open_page(context.new_page(), example) for context in contexts]
        for each in pages:
            each.evaluate(_RECORD_ARRIVALS)
        probe = f"hello both {uuid.uuid4().hex[:8]}"
        pages[0].fill("#publish-data", probe)
        pages[0].click("#publish")
        for each in pages:
            expect(each.locator("#pushed li")).to_have_text([re.compile(rf"^\[\S+\] {probe}$")])
        submitted = pages[0].evaluate("submitted")
        delays = []
        for each in pages:
            arrivals = each.evaluate("arrivals")
            assert [data for data, _ in arrivals] == [probe]
            delays.append((arrivals[0][1] - submitted) / 1000)
        print(f"publish -> shown: {', '.join(f'{d * 1000:.0f} ms' for d in delays)}")
        assert max(delays) < 1.0, delays
    finally:
        for context in contexts:
            context.close()


def test_the_countdown_resumes_after_a_server_restart(page: Page) -> None:
    """When the server dies mid-countdown and a new one starts on the same port,
    the browser reconnects by itself and the list goes on with no repeat and no gap."""
    from playwright.sync_api import expect

    env = {"COUNTDOWN_INTERVAL": "0.5"}
    items = page.locator("#messages li")
    # Leaving the block stops the server at once (SIGQUIT), so the stream breaks
    # mid-countdown as in a crash.
    with serving(env=env) as first:
        open_page(page, first)
        page.click("#connect")
        expect(items.nth(4)).to_be_visible(timeout=10_000)
    assert items.count() < 9, "the countdown finished before the restart: nothing was tested"
    with serving(env=env, port=first.port) as second:
        expect(items).to_have_count(9, timeout=15_000)
        expect(page.locator("#state")).to_have_text("closed")
        assert_full_countdown(items.all_text_contents())
        wait_for(
            lambda: stream_requests(second.output()) == 1,
            10,
            "the new server did not serve the rest of the countdown",
        )


_OTHER_ORIGIN_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Another origin</title>
<script>
"use strict";
window.seen = [];
const target = new URLSearchParams(location.search).get("target");
const source = new EventSource(target, { withCredentials: true });
source.onopen = () => seen.push("open");
source.onmessage = (event) => seen.push("message " + event.data);
source.onerror = () => seen.push("error " + source.readyState);
source.addEventListener("reset", () => seen.push("reset"));
</script>
"""


def wait_until_seen(page: Page, done: t.Callable[[list[str]], bool], problem: str) -> list[str]:
    """Wait until the other-origin page's ``seen`` list satisfies ``done``."""
    deadline = time.monotonic() + 10
    while True:
        seen: list[str] = page.evaluate("seen")
        if done(seen):
            return seen
        # A closed EventSource never opens or receives again: fail at once.
        closed = "error 2" in seen
        assert not closed and time.monotonic() < deadline, f"{problem}; the page saw {seen}"
        time.sleep(0.05)


def publish(server: Gunicorn, data: str) -> None:
    httpx.post(f"{server.url}/api/publish", json={"data": data}).raise_for_status()


def test_cross_origin_stream_with_credentials(browser: Browser) -> None:
    """From another origin, ``withCredentials: true`` works when CORS allows that
    origin, reconnects included, and fails cleanly (error, CLOSED) when it does not."""
    app = "tests.apps.env_app:create_app()"
    with StaticPage(_OTHER_ORIGIN_PAGE) as allowed, StaticPage(_OTHER_ORIGIN_PAGE) as denied:
        env = environment(SSE_PUSH_CORS_ORIGINS=[allowed.origin])
        context = browser.new_context()
        try:
            with serving(app, env=env) as server:
                target = urllib.parse.quote(f"{server.url}/events?channel=default")
                good = context.new_page()
                good.goto(f"{allowed.origin}/?target={target}")
                bad = context.new_page()
                bad.goto(f"{denied.origin}/?target={target}")
                wait_until_seen(good, lambda seen: "open" in seen, "the allowed origin failed")
                publish(server, "first")
                wait_until_seen(good, lambda seen: "message first" in seen, "no event arrived")
                bad.wait_for_function("seen.includes('error 2')", timeout=10_000)
                assert bad.evaluate("seen") == ["error 2"]
            # The reconnect to a new server carries Last-Event-ID, which CORS must
            # let through: the new server does not know that id and says "reset".
            with serving(app, env=env, port=server.port) as server:
                wait_until_seen(good, lambda seen: seen.count("open") == 2, "no reconnect")
                publish(server, "second")
                seen = wait_until_seen(
                    good, lambda seen: "message second" in seen, "no event after the reconnect"
                )
                events = [entry for entry in seen if entry != "error 0"]
                assert events == ["open", "message first", "open", "reset", "message second"]
        finally:
            context.close()


def test_connect_after_disconnect_starts_a_clean_list(example: Gunicorn, page: Page) -> None:
    """Connect after Disconnect starts the countdown over, and the list with it:
    it then holds exactly one full countdown, not the old run plus a new one."""
    from playwright.sync_api import expect

    open_page(page, example)
    items = page.locator("#messages li")
    page.click("#connect")
    expect(items.nth(3)).to_be_visible(timeout=10_000)
    page.click("#disconnect")
    assert items.count() < 9, "the countdown finished before Disconnect: nothing was tested"
    page.click("#connect")
    expect(page.locator("#state")).to_have_text("closed", timeout=10_000)
    expect(items).to_have_count(9)
    assert_full_countdown(items.all_text_contents())


def test_the_page_logs_no_error_and_no_failed_request(example: Gunicorn, browser: Browser) -> None:
    """Loading the page and running a countdown logs nothing to the console at
    error level and asks for nothing the server answers with 4xx/5xx (a favicon)."""
    from playwright.sync_api import ConsoleMessage, Response, expect

    errors: list[str] = []
    failed: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_response(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    # A browser of its own: Chromium asks for a site's favicon once per
    # browser, so a page other tests opened before would hide the request.
    fresh = browser.browser_type.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
    try:
        page = fresh.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("response", on_response)
        open_page(page, example)
        page.click("#connect")
        expect(page.locator("#messages li")).to_have_count(9, timeout=10_000)
        time.sleep(0.5)  # a late favicon request would come now
        # Checked before the browser closes, which aborts the open streams.
        assert failed == []
        assert errors == []
    finally:
        fresh.close()


@pytest.mark.parametrize("event_type", ["note", "order.shipped"])
def test_the_form_shows_named_events_with_type_and_id(
    example: Gunicorn, page: Page, event_type: str
) -> None:
    """An event published with a type through the page's own form shows on the
    page as ``[id] type: data``, the id being the one the server assigned."""
    from playwright.sync_api import expect

    open_page(page, example)
    probe = f"typed {uuid.uuid4().hex[:8]}"
    with page.expect_response("**/api/publish") as answer:
        page.fill("#publish-data", probe)
        page.fill("#publish-event", event_type)
        page.click("#publish")
    event_id = answer.value.json()["id"]
    expect(page.locator("#pushed li")).to_have_text([f"[{event_id}] {event_type}: {probe}"])


def flask_cli(*args: str, broker_url: str | None) -> subprocess.CompletedProcess[str]:
    """Run ``flask --app example_app:create_app() ...`` as a user would, in its own process."""
    env = {key: value for key, value in os.environ.items() if key != "SSE_PUSH_BROKER_URL"}
    if broker_url is not None:
        env["SSE_PUSH_BROKER_URL"] = broker_url
    command = [sys.executable, "-m", "flask", "--app", "example_app:create_app()", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_publish_with_the_in_process_broker_refuses(example: Gunicorn, page: Page) -> None:
    """With the default broker, ``flask sse publish`` cannot reach the server's
    pages: it exits 1 and says why and how to fix it, and the page shows nothing."""
    open_page(page, example)
    result = flask_cli("sse", "publish", "--event", "note", "lost", broker_url=None)
    assert result.returncode == 1, result
    assert "in-process broker" in result.stderr
    assert "SSE_PUSH_BROKER_URL" in result.stderr
    time.sleep(1)
    assert page.locator("#pushed li").count() == 0


def test_cli_and_publisher_events_show_on_the_page(page: Page) -> None:
    """On Redis, the documented ``flask sse publish --event note`` and
    ``Publisher(...).publish(..., event="created")`` both show on an open page,
    with their type and id."""
    from playwright.sync_api import expect

    from flask_sse_push import Publisher

    with (
        RedisServer() as redis_server,
        serving(env={"SSE_PUSH_BROKER_URL": redis_server.url}) as server,
    ):
        open_page(page, server)
        items = page.locator("#pushed li")
        result = flask_cli(
            "sse", "publish", "--channel", "default", "--event", "note", "hello from the shell",
            broker_url=redis_server.url,
        )  # fmt: skip
        assert result.returncode == 0, result
        note_id = result.stdout.strip()
        expect(items).to_have_text([f"[{note_id}] note: hello from the shell"])
        # A type nothing on the page names: the page shows every event it gets.
        unheard = f"type-{uuid.uuid4().hex[:8]}"
        with Publisher(redis_server.url) as publisher:
            created_id = publisher.publish({"order": 7}, event="created", channel="default")
            unheard_id = publisher.publish("any type", event=unheard, channel="default")
        expect(items).to_have_text(
            [
                f"[{note_id}] note: hello from the shell",
                f'[{created_id}] created: {{"order": 7}}',
                f"[{unheard_id}] {unheard}: any type",
            ]
        )
