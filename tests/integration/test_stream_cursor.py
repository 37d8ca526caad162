"""Every stream leaves its client a cursor, even one that ends before its first event.

A stream opened without ``Last-Event-ID`` sends the broker's cursor of now as an
``id:`` line first, so a stream that reaches its lifetime (or ends any other
way) before any event still sends the client back with a cursor: nothing
published while it waits to reconnect is lost. Real gunicorn, real headless
Chromium ``EventSource`` objects made the README's way, and the Node
``eventsource`` package; the memory broker and a real redis-server.
"""

from __future__ import annotations

import time
import typing as t

import httpx
import pytest

from tests.apps.lifecycle_app import environment
from tests.support.browser_helpers import chromium
from tests.support.node_client import node_client
from tests.support.servers import gunicorn

if t.TYPE_CHECKING:
    from tests.support.servers import Gunicorn, RedisServer

pytestmark = pytest.mark.integration

APP = "tests.apps.lifecycle_app:create_app()"

#: Browser contexts, and EventSource objects in each: 30 clients, each context
#: with its own connections (Chromium opens at most 6 per host and context).
CONTEXTS, PER_PAGE = 6, 5

#: What each page runs: the README's way to listen, and a record of what came.
LISTEN = """(count) => {
  window.got = [];
  window.opened = 0;
  for (let i = 0; i < count; i++) {
    const source = new EventSource("/events?channel=quiet");
    let first = true;
    source.onopen = () => { if (first) { first = false; window.opened += 1; } };
    source.onmessage = (event) => window.got.push([i, event.data, event.lastEventId]);
  }
}"""


def _live(server: Gunicorn) -> int:
    live: int = httpx.get(f"{server.url}/stats", timeout=10).json()["live"]
    return live


def _wait(condition: t.Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("broker", ["memory", "redis"])
def test_quiet_streams_that_end_lose_nothing_published_in_the_retry_pause(
    broker: str, request: pytest.FixtureRequest
) -> None:
    """30 Chromium EventSources and 3 Node clients connect without a cursor; every
    stream reaches its lifetime before any event; one event is published while all
    of them wait to reconnect. Every client gets it."""
    config: dict[str, object] = {
        "SSE_PUSH_MAX_LIFETIME": 1.0,
        "SSE_PUSH_RETRY": 8000,
        "SSE_PUSH_KEEPALIVE": 5.0,
    }
    if broker == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        config["SSE_PUSH_BROKER_URL"] = server.url
        config["SSE_PUSH_REDIS_PREFIX"] = request.getfixturevalue("prefix")
    with gunicorn(APP, env=environment(**config)) as site, chromium() as browser:
        contexts = [browser.new_context() for _ in range(CONTEXTS)]
        pages = []
        for context in contexts:
            page = context.new_page()
            page.goto(f"{site.url}/stats")
            page.evaluate(LISTEN, PER_PAGE)
            pages.append(page)
        url = f"{site.url}/events?channel=quiet"
        with (
            node_client(url, 1) as node_a,
            node_client(url, 1) as node_b,
            node_client(url, 1) as node_c,
        ):
            nodes = [node_a, node_b, node_c]
            for node in nodes:
                node.next("open", timeout=20)
            for page in pages:
                page.wait_for_function(f"window.opened === {PER_PAGE}", timeout=20_000)
            # Every stream ends at its lifetime, before any event: all clients
            # now wait 8 s to reconnect (a wide window, for a loaded machine).
            _wait(lambda: _live(site) == 0, 20, "every stream to reach its lifetime")
            published = httpx.post(
                f"{site.url}/publish", json={"channel": "quiet", "data": "in the pause"}, timeout=10
            ).json()["ids"][0]
            for page in pages:
                page.wait_for_function(f"window.got.length >= {PER_PAGE}", timeout=40_000)
                got = page.evaluate("window.got")
                assert sorted(got) == [[i, "in the pause", published] for i in range(PER_PAGE)]
            for node in nodes:
                event = node.next("event", timeout=40)
                assert (event["data"], event["lastEventId"]) == ("in the pause", published)
        for context in contexts:
            context.close()
