"""The browser client and the page's session, in headless Chromium against
``gunicorn -w 2`` on a real redis-server (``tests/apps/session_app.py``).

Tabs share a stream only with tabs of the same user (the server's session key),
a page of the origin that does not hold the key cannot forge relay messages,
and a revoked tab stops without asking the stream URL again. Which tab asked
for what is read from Playwright's request events.
"""

from __future__ import annotations

import time
import typing as t
import uuid

import httpx
import pytest

from tests.support.servers import gunicorn

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, BrowserContext, Page, Request, Response

    from tests.support.servers import Gunicorn, RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.session_app:create_app()"

#: Records what a client hands to its handlers, as ``[type, data, lastEventId]``.
START = """(options) => {
    window.got = [];
    window.client = new SSEPushClient("/events", options);
    for (const type of ["message", "reset", "open", "error"]) {
        client.on(type, (event) => got.push([event.type, event.data, event.lastEventId]));
    }
}"""


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[Gunicorn]:
    env = {
        "SSE_PUSH_BROKER_URL": redis_server.url,
        "SSE_PUSH_REDIS_PREFIX": f"cs-{uuid.uuid4().hex[:8]}:",
    }
    with gunicorn(APP, env=env, workers=2) as running:
        yield running


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """One browser profile: its tabs share cookies, Web Locks and BroadcastChannels."""
    fresh = browser.new_context()
    try:
        yield fresh
    finally:
        fresh.close()


class StreamRequests:
    """The requests a page makes to the stream URL, and their statuses."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.statuses: list[int] = []
        page.on("request", self._request)
        page.on("response", self._response)

    @staticmethod
    def _is_stream(url: str) -> bool:
        return httpx.URL(url).path == "/events"

    def _request(self, request: Request) -> None:
        if self._is_stream(request.url):
            self.urls.append(request.url)

    def _response(self, response: Response) -> None:
        if self._is_stream(response.url):
            self.statuses.append(response.status)


def wait_for(condition: t.Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def tab(context: BrowserContext, server: Gunicorn, **options: object) -> Page:
    page = context.new_page()
    page.goto(server.url)
    page.wait_for_function("window.clientReady === true")
    page.evaluate(START, options)
    return page


def switch_user(context: BrowserContext, server: Gunicorn, to: str) -> None:
    """Log out and log ``to`` in, in a tab of its own (its cookie is the profile's)."""
    page = context.new_page()
    page.goto(f"{server.url}/logout")
    page.goto(f"{server.url}/login/{to}")
    page.close()


def login(context: BrowserContext, server: Gunicorn, name: str) -> None:
    page = context.new_page()
    page.goto(f"{server.url}/login/{name}")
    page.close()


def role(page: Page) -> str:
    value: str = page.evaluate("client.role")
    return value


def ready(page: Page) -> int:
    value: int = page.evaluate("client.readyState")
    return value


def messages(page: Page) -> list[str]:
    return [data for kind, data, _ in page.evaluate("got") if kind == "message"]


def publish(server: Gunicorn, data: str, channel: str) -> None:
    answer = httpx.post(f"{server.url}/publish", json={"data": data, "channel": channel})
    assert answer.status_code == 200, answer.text


def all_open(pages: list[Page]) -> t.Callable[[], bool]:
    return lambda: all(ready(page) == 1 for page in pages)


def test_a_user_switch_in_one_browser_leaks_nothing(
    server: Gunicorn, context: BrowserContext
) -> None:
    """Alice's two tabs share; after alice logs out and bob logs in, bob's tabs
    (asking for the same channels) elect their own leader, whose stream is
    refused, and get nothing of alice's. Before, they followed alice's stream
    and got her next event."""
    name = f"alice{uuid.uuid4().hex[:6]}"
    channels = ["news", f"user.{name}"]
    login(context, server, name)
    alice = [tab(context, server, channels=channels) for _ in range(2)]
    wait_for(all_open(alice), 10, "alice's tabs did not open")
    assert sorted(role(page) for page in alice) == ["follower", "leader"]
    publish(server, "for alice 1", f"user.{name}")
    wait_for(lambda: all(messages(p) == ["for alice 1"] for p in alice), 5, "alice's tabs")

    switch_user(context, server, "bob")
    bob = [context.new_page() for _ in range(2)]
    asked = [StreamRequests(page) for page in bob]
    for page in bob:
        page.goto(server.url)
        page.wait_for_function("window.clientReady === true")
        page.evaluate(START, {"channels": channels})
    # Settled: open (following someone), or stopped.
    wait_for(lambda: all(ready(page) != 0 for page in bob), 10, "bob's tabs did not settle")
    publish(server, "for alice 2", f"user.{name}")
    wait_for(lambda: all(len(messages(p)) == 2 for p in alice), 5, "alice's tabs missed one")
    time.sleep(0.5)  # time for a leak to arrive
    assert [messages(page) for page in bob] == [[], []]
    # Bob's leader asked for alice's channel with bob's cookie: 403, and bob's
    # tabs stopped. (A tab that loads after its leader stopped tries once itself.)
    assert [ready(page) for page in bob] == [2, 2]
    statuses = [status for each in asked for status in each.statuses]
    assert statuses and set(statuses) == {403}, statuses


def test_tabs_of_two_users_of_one_browser_elect_a_leader_each(
    server: Gunicorn, context: BrowserContext
) -> None:
    """On a channel both may read, alice's tabs and bob's tabs hold one stream
    each. Before, the four tabs shared alice's stream."""
    channel = f"news{uuid.uuid4().hex[:6]}"
    login(context, server, "alice")
    alice = [tab(context, server, channels=[channel]) for _ in range(2)]
    wait_for(all_open(alice), 10, "alice's tabs did not open")
    switch_user(context, server, "bob")
    bob = [tab(context, server, channels=[channel]) for _ in range(2)]
    wait_for(all_open(bob), 10, "bob's tabs did not open")
    time.sleep(0.5)  # time for a wrong hand-over
    assert sorted(role(page) for page in alice) == ["follower", "leader"]
    assert sorted(role(page) for page in bob) == ["follower", "leader"]
    publish(server, "to everyone", channel)
    pages = alice + bob
    wait_for(lambda: all(messages(p) == ["to everyone"] for p in pages), 5, "a tab missed it")


def test_a_page_without_the_key_cannot_forge_relay_messages(
    server: Gunicorn, context: BrowserContext
) -> None:
    """A page of the origin that does not load the client posts an event and a
    stop on the channel name tabs used before sessions. Before, the follower
    delivered the event and closed for good."""
    channel = f"news{uuid.uuid4().hex[:6]}"
    tabs = [tab(context, server, channels=[channel]) for _ in range(2)]
    wait_for(all_open(tabs), 10, "the tabs did not open")
    url = tabs[0].evaluate("client.url")
    forger = context.new_page()
    forger.goto(f"{server.url}/blank")
    forger.evaluate(
        """(url) => {
            const channel = new BroadcastChannel(`flask-sse-push ${url}`);
            const from = "x";
            const event = {k: "event", type: "message", data: "forged", id: "9", fresh: true};
            channel.postMessage({...event, from});
            channel.postMessage({k: "beat", state: 2, error: true, from});
            channel.close();
        }""",
        url,
    )
    time.sleep(0.5)
    assert [ready(page) for page in tabs] == [1, 1]
    publish(server, "real", channel)
    wait_for(lambda: all(messages(p) == ["real"] for p in tabs), 5, "a tab missed it")


@pytest.mark.parametrize("shared", [True, False])
def test_a_revoked_tab_makes_no_further_request(
    server: Gunicorn, context: BrowserContext, shared: bool
) -> None:
    """Alice logs out with a revoke: her tabs stop on the stop id and never ask
    the stream URL again. Before, each came back once (after ``retry: 100``)
    to be told ``204``."""
    name = f"alice{uuid.uuid4().hex[:6]}"
    login(context, server, name)
    pages = [context.new_page() for _ in range(2)]
    asked = [StreamRequests(page) for page in pages]
    for page in pages:
        page.goto(server.url)
        page.wait_for_function("window.clientReady === true")
        page.evaluate(START, {"channels": [f"user.{name}"], "shared": shared})
    wait_for(all_open(pages), 10, "the tabs did not open")
    time.sleep(0.3)
    before = sum(len(each.urls) for each in asked)
    assert before == (1 if shared else 2)
    logout = context.new_page()
    logout.goto(f"{server.url}/logout?revoke=1")
    logout.close()
    wait_for(lambda: all(ready(page) == 2 for page in pages), 5, "a tab did not stop")
    time.sleep(1.5)  # far past the stop chunk's retry: 100
    assert sum(len(each.urls) for each in asked) == before
    for page in pages:
        assert page.evaluate("got.at(-1)[0]") == "error"
