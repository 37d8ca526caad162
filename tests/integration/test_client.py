"""The browser client (``/events/client.js``) in headless Chromium, against
``gunicorn -k gevent``: one stream shared by many tabs, handoff without loss,
fallback, reset and stop.

How many streams the browser holds is read from the server's own count
(``/events/health``); what each tab received, from the tab.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
import typing as t
import uuid

import httpx
import pytest

from tests.support.servers import Gunicorn, start_gunicorn, stop

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Records what a client hands to its handlers, as ``[type, data, lastEventId]``.
START = """(options) => {
    window.got = [];
    window.client = new SSEPushClient("/events", options);
    for (const type of ["message", "created", "reset", "open", "error"]) {
        client.on(type, (event) => got.push([event.type, event.data, event.lastEventId]));
    }
}"""


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    running = start_gunicorn("tests.apps.client_app:create_app()")
    try:
        yield running
    finally:
        # Streams of closed tabs may still be open: do not wait for them.
        stop(running.process, signal.SIGQUIT)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    fresh = browser.new_context()
    try:
        yield fresh
    finally:
        fresh.close()


def wait_for(condition: t.Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def on(page: Page, condition: t.Callable[[Page], bool]) -> t.Callable[[], bool]:
    """``condition`` bound to ``page``, for :func:`wait_for` in a loop."""
    return lambda: condition(page)


def streams(server: Gunicorn) -> int:
    count: int = httpx.get(f"{server.url}/events/health").json()["clients_connected"]
    return count


def publish(server: Gunicorn, data: str, channel: str, event: str | None = None) -> str:
    body = {"data": data, "channel": channel, "event": event}
    event_id: str = httpx.post(f"{server.url}/publish", json=body).json()["id"]
    return event_id


def new_channel() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def open_page(context: BrowserContext, server: Gunicorn) -> Page:
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_function("window.clientReady === true")
    return page


def start(page: Page, **options: object) -> Page:
    page.evaluate(START, options)
    return page


def messages(page: Page) -> list[str]:
    return [data for kind, data, _ in page.evaluate("got") if kind == "message"]


def role(page: Page) -> str:
    value: str = page.evaluate("window.client ? client.role : 'none'")
    return value


def leaders(pages: list[Page]) -> list[Page]:
    return [page for page in pages if role(page) == "leader"]


def settle(server: Gunicorn, expected: int) -> None:
    wait_for(
        lambda: streams(server) == expected, 10, f"the server does not hold {expected} streams"
    )


@pytest.fixture(autouse=True)
def no_streams_left(server: Gunicorn) -> None:
    """Start each test from a server that holds no stream of an earlier one."""
    settle(server, 0)


def test_eight_tabs_hold_one_stream_and_all_show_a_publish(
    server: Gunicorn, context: BrowserContext
) -> None:
    channel = new_channel()
    pages = [start(open_page(context, server), channels=[channel]) for _ in range(8)]
    wait_for(lambda: all(p.evaluate("client.readyState") == 1 for p in pages), 10, "not open")
    time.sleep(1)  # time for a wrongly second stream to show up
    assert streams(server) == 1
    assert len(leaders(pages)) == 1
    publish(server, "to all eight", channel)
    for page in pages:
        wait_for(on(page, lambda p: messages(p) == ["to all eight"]), 5, "a tab missed it")
    assert streams(server) == 1


def test_several_clients_in_one_tab_share_too(server: Gunicorn, context: BrowserContext) -> None:
    channel = new_channel()
    page = open_page(context, server)
    page.evaluate(
        """(channel) => {
            window.seen = [[], [], []];
            window.clients = seen.map((list) => new SSEPushClient("/events", {channels: [channel]})
                .on("message", (event) => list.push(event.data)));
        }""",
        channel,
    )
    wait_for(lambda: page.evaluate("clients.every((c) => c.readyState === 1)"), 10, "not open")
    time.sleep(0.5)
    assert streams(server) == 1
    publish(server, "one", channel)
    wait_for(lambda: page.evaluate("seen") == [["one"]] * 3, 5, "a client missed it")


def crash(page: Page) -> None:
    session = page.context.new_cdp_session(page)
    with contextlib.suppress(Exception):
        session.send("Page.crash", timeout=300)


@pytest.mark.parametrize("how", ["close", "crash", "hang"])
def test_handoff_loses_and_repeats_nothing(
    server: Gunicorn, context: BrowserContext, how: str
) -> None:
    """The holding tab goes away (closed, crashed, or its event loop blocked for
    4 s) while events are published every 100 ms: another tab holds the stream
    within about 2 s, and every tab has every event once, in order."""
    channel = new_channel()
    pages = [start(open_page(context, server), channels=[channel]) for _ in range(4)]
    wait_for(lambda: len(leaders(pages)) == 1, 10, "no leader")
    settle(server, 1)
    (leader,) = leaders(pages)
    others = [page for page in pages if page is not leader]
    published: list[str] = []

    def publisher() -> None:
        for n in range(50):
            publish(server, f"n{n}", channel)
            published.append(f"n{n}")
            time.sleep(0.1)

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        wait_for(lambda: len(published) >= 10, 5, "publisher stuck")
        gone = time.monotonic()
        if how == "close":
            leader.close()
        elif how == "crash":
            crash(leader)
        else:
            leader.evaluate(
                "setTimeout(() => { const end = Date.now() + 4000; while (Date.now() < end); })"
            )
        wait_for(lambda: len(leaders(others)) == 1, 5, "no tab took over")
        handoff = time.monotonic() - gone
    finally:
        thread.join()
    print(f"handoff after {how}: {handoff:.2f} s")
    assert handoff < 2.5
    remaining = pages if how == "hang" else others
    for page in remaining:
        wait_for(on(page, lambda p: len(messages(p)) >= len(published)), 10, "events missing")
    time.sleep(0.5)  # time for a late duplicate to arrive
    for page in remaining:
        assert messages(page) == published
    settle(server, 1)


def test_two_tabs_opening_at_the_same_instant_hold_one_stream(
    server: Gunicorn, context: BrowserContext
) -> None:
    channel = new_channel()
    pages = [open_page(context, server) for _ in range(2)]
    rounds = 5
    for _ in range(rounds):
        at = pages[0].evaluate("Date.now()") + 300
        for page in pages:
            page.evaluate(
                f"(at) => setTimeout(() => ({START})({{channels: [{channel!r}]}}),"
                " at - Date.now())",
                at,
            )
        wait_for(lambda: len(leaders(pages)) == 1, 5, "no single leader")
        time.sleep(0.5)
        assert streams(server) == 1
        assert len(leaders(pages)) == 1
        # The follower first: closing the leader first would hand the stream over.
        for page in sorted(pages, key=lambda page: role(page) == "leader"):
            page.evaluate("client.close()")
        settle(server, 0)
    # Every stream request is logged when it ends: one per round, no second one.
    wait_for(
        lambda: (
            len(re.findall(rf'"GET /events\?channel={channel}[^"]*" 200', server.output()))
            >= rounds
        ),
        5,
        "gunicorn did not log the streams",
    )
    assert len(re.findall(rf'"GET /events\?channel={channel}[^"]*"', server.output())) == rounds


def test_a_tab_on_other_channels_gets_only_its_own(
    server: Gunicorn, context: BrowserContext
) -> None:
    first, second = new_channel(), new_channel()
    a1, b, a2 = (
        start(open_page(context, server), channels=[channel]) for channel in (first, second, first)
    )
    wait_for(lambda: all(p.evaluate("client.readyState") == 1 for p in (a1, b, a2)), 10, "open")
    settle(server, 2)
    publish(server, "a-1", first)
    publish(server, "b-1", second)
    publish(server, "a-2", first)
    for page in (a1, a2):
        wait_for(on(page, lambda p: len(messages(p)) >= 2), 5, "missing events")
    wait_for(lambda: len(messages(b)) >= 1, 5, "missing events")
    time.sleep(0.3)
    assert messages(a1) == messages(a2) == ["a-1", "a-2"]
    assert messages(b) == ["b-1"]


@pytest.mark.parametrize("shared", [True, False])
def test_an_unknown_cursor_reaches_the_reset_handler(
    server: Gunicorn, context: BrowserContext, shared: bool
) -> None:
    channel = new_channel()
    newest = publish(server, "before", channel)
    page = start(
        open_page(context, server), channels=[channel], lastEventId="nope-1", shared=shared
    )
    wait_for(lambda: any(kind == "reset" for kind, _, _ in page.evaluate("got")), 5, "no reset")
    reset = next(event for event in page.evaluate("got") if event[0] == "reset")
    assert reset[2] == newest
    assert '"reason": "unknown"' in reset[1]
    publish(server, "after", channel)
    wait_for(lambda: messages(page) == ["after"], 5, "no event after the reset")


def test_named_events_and_the_cursor_resume_a_follower(
    server: Gunicorn, context: BrowserContext
) -> None:
    """A tab opened with the page's cursor gets what was published since, from
    the tab holding the stream, before the live events, once each."""
    channel = new_channel()
    publish(server, "c0", channel)

    def cursor_now() -> str:
        response = httpx.get(f"{server.url}/cursor", params={"channel": channel})
        cursor: str = response.json()["cursor"]
        return cursor

    leader = start(open_page(context, server), channels=[channel], lastEventId=cursor_now())
    wait_for(lambda: role(leader) == "leader", 5, "no leader")
    cursor = cursor_now()
    publish(server, "c1", channel, event="created")
    publish(server, "m1", channel)
    follower = start(open_page(context, server), channels=[channel], lastEventId=cursor)
    publish(server, "m2", channel)
    wait_for(lambda: len(follower.evaluate("got")) >= 4, 5, f"missed: {follower.evaluate('got')}")
    time.sleep(0.3)
    got = [(kind, data) for kind, data, _ in follower.evaluate("got")]
    assert got == [("open", ""), ("created", "c1"), ("message", "m1"), ("message", "m2")]
    assert role(follower) == "follower"
    assert streams(server) == 1


def test_revoked_stream_stops_every_tab_for_good(server: Gunicorn, context: BrowserContext) -> None:
    """``revoke()`` ends the stream with the stop id; every tab goes to CLOSED
    with an error at once, and no tab asks for the stream again (not even the
    one reconnect an ``EventSource`` makes to be told ``204``)."""
    channel = new_channel()
    pages = [start(open_page(context, server), channels=[channel]) for _ in range(3)]
    wait_for(lambda: all(p.evaluate("client.readyState") == 1 for p in pages), 10, "not open")
    settle(server, 1)
    assert httpx.post(f"{server.url}/revoke", params={"channel": channel}).json() == {"ended": 1}
    for page in pages:
        wait_for(on(page, lambda p: p.evaluate("client.readyState") == 2), 5, "did not stop")
        assert ["error"] == [kind for kind, _, _ in page.evaluate("got") if kind == "error"][-1:]
    time.sleep(1.5)  # five times the retry: time for a wrong reconnect
    assert streams(server) == 0
    log = server.output()
    assert log.count(f"GET /events?channel={channel}") == 1, "a tab came back"
    assert "last_event_id=flask-sse-push%3Astopped" not in log


@pytest.mark.parametrize("fallback", ["shared: false", "no navigator.locks"])
def test_fallback_gives_each_tab_its_own_stream(
    server: Gunicorn, browser: Browser, fallback: str
) -> None:
    context = browser.new_context()
    try:
        options: dict[str, object] = {"channels": [new_channel()]}
        if fallback == "shared: false":
            options["shared"] = False
        else:
            context.add_init_script("delete Navigator.prototype.locks;")
        pages = [start(open_page(context, server), **options) for _ in range(3)]
        if fallback != "shared: false":
            assert pages[0].evaluate("navigator.locks") is None
        wait_for(lambda: all(p.evaluate("client.readyState") == 1 for p in pages), 10, "open")
        assert [role(page) for page in pages] == ["own"] * 3
        settle(server, 3)
        publish(server, "each", t.cast("list[str]", options["channels"])[0])
        for page in pages:
            wait_for(on(page, lambda p: messages(p) == ["each"]), 5, "a tab missed it")
    finally:
        context.close()


def test_the_example_page_shares_one_stream_and_says_so(browser: Browser) -> None:
    """Three tabs of the example page: the server holds one stream, the line on
    the page says so, one tab holds it, and a publish shows in all three."""
    from playwright.sync_api import expect

    example = start_gunicorn("example_app:create_app()")
    context = browser.new_context()
    try:
        pages = [context.new_page() for _ in range(3)]
        for page in pages:
            page.goto(example.url)
            expect(page.locator("#push-state")).to_have_text("open")
        for page in pages:
            expect(page.locator("#streams")).to_have_text("1", timeout=5000)
        roles = [page.locator("#role").text_content() for page in pages]
        assert roles.count("holds the shared stream") == 1, roles
        httpx.post(f"{example.url}/api/publish", json={"data": "to the three"})
        for page in pages:
            expect(page.locator("#pushed li")).to_have_text([re.compile(r"\] to the three$")])
    finally:
        context.close()
        stop(example.process, signal.SIGQUIT)


#: Bodies that exercise the parsing rules: CR, LF and CRLF line ends, a CR at a
#: chunk's end, comments, fields without a colon or a space, ``id`` with NUL
#: (ignored), an empty ``id`` (clears), ``retry`` with a non-digit (ignored),
#: data-less blocks, an unfinished last event, and a UTF-8 BOM.
BODIES = [
    "data: a\n\ndata:b\r\ndata:  c\r\n\r\nevent: x\rdata\r\rid: 1\n\n",
    ": comment\nid: 7\n\ndata: after a data-less block\n\nid\ndata: cleared\n\n",
    "id: a\x00b\ndata: NUL ignored\n\nretry: 12x\nretry: 250\ndata: r\n\ndata: unfinished",
    "\ufeffdata: bom\n\nevent:\ndata: \u00e9\u4e2d\U0001f600\n\nfield: x\ndata\n\n",
]

FEED = """([body, cuts]) => {
    const out = [];
    const parser = new EventStreamParser(
        (type, data, id) => out.push([type, data, id]), () => {}, (ms) => out.push(["retry", ms]));
    let at = 0;
    for (const cut of [...cuts, body.length]) { parser.feed(body.slice(at, cut)); at = cut; }
    return out;
}"""


def test_the_parser_follows_the_whatwg_rules_in_any_chunking(
    server: Gunicorn, context: BrowserContext
) -> None:
    """The client's parser gives what the spec-written parser in tests/support/wire.py
    gives, whole, one character at a time, and split at every point."""
    from tests.support.wire import parse

    page = open_page(context, server)
    for body in BODIES:
        expected = [[e.type, e.data, e.last_event_id] for e in parse(body.encode()).events]
        # The BOM is the decoder's job (TextDecoder strips it), not the parser's.
        text = body.removeprefix("\ufeff")
        splits = [[], list(range(1, len(text)))] + [[cut] for cut in range(1, len(text))]
        for cuts in splits:
            got = [event for event in page.evaluate(FEED, [text, cuts]) if event[0] != "retry"]
            assert got == expected, (body, cuts)
    retries = [e for e in page.evaluate(FEED, [BODIES[2], []]) if e[0] == "retry"]
    assert retries == [["retry", 250]]
