"""A Redis Cluster stream of 40 channels, whose cursor cannot fit a ``Last-Event-ID``.

Its ids fall back to a summary (the oldest position, and a tag), which must stay
unique per event: ``client.js`` drops any id it already delivered. Real cluster,
real gunicorn, ``client.js`` in real headless Chromium.
"""

from __future__ import annotations

import typing as t

import httpx
import pytest

from flask_sse_push.brokers.redis_cluster import RedisClusterBroker
from tests.apps.lifecycle_app import environment
from tests.support.browser_helpers import chromium
from tests.support.servers import gunicorn

if t.TYPE_CHECKING:
    from tests.support.cluster_helpers import RedisCluster

pytestmark = pytest.mark.integration

CHANNELS = [f"many-{n:02d}" for n in range(40)]

LISTEN = """async (channels) => {
  const { SSEPushClient } = await import("/events/client.js");
  window.got = [];
  window.client = new SSEPushClient("/events", { channels, shared: false });
  window.client.on("message", (event) => window.got.push([event.data, event.lastEventId]));
  window.client.on("reset", (event) => window.got.push(["reset", event.lastEventId]));
  await new Promise((resolve) => {
    const wait = () => (window.client.readyState === 1 ? resolve() : setTimeout(wait, 20));
    wait();
  });
}"""


def test_client_js_gets_every_event_of_a_40_channel_cluster_stream(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    config = {
        "SSE_PUSH_BROKER_URL": redis_cluster.url,
        "SSE_PUSH_REDIS_PREFIX": prefix,
        "SSE_PUSH_KEEPALIVE": 5.0,
    }
    publisher = RedisClusterBroker.from_url(redis_cluster.url, prefix=prefix)
    try:
        with gunicorn("tests.apps.lifecycle_app:create_app()", env=environment(**config)) as site:
            with chromium() as browser:
                page = browser.new_page()
                page.goto(f"{site.url}/stats")
                page.evaluate(LISTEN, CHANNELS)
                sent = []
                for n in range(300):
                    channel = CHANNELS[n % len(CHANNELS)]
                    httpx.post(
                        f"{site.url}/publish",
                        json={"channel": channel, "data": f"{channel}:{n}"},
                        timeout=10,
                    )
                    sent.append(f"{channel}:{n}")
                page.wait_for_function("window.got.length >= 300", timeout=30_000)
                got = page.evaluate("window.got")
    finally:
        publisher.close()
    ids = [event_id for _, event_id in got]
    assert len(set(ids)) == len(ids) == 300
    # Once most channels have a position, the composite cursor no longer fits.
    assert all(event_id.startswith("~~") for event_id in ids[-200:])
    assert sorted(data for data, _ in got) == sorted(sent)
