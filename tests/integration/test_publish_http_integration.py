"""``POST /events/publish`` under ``gunicorn -w 2`` on a real redis-server: it
delivers to streams in both workers, and refuses bad input, a missing or wrong
token and an oversized body with the documented codes."""

from __future__ import annotations

import typing as t
import uuid

import httpx
import pytest

from tests.support.redis_helpers import (
    pump,
)
from tests.support.servers import Gunicorn, gunicorn
from tests.support.spread import WORKERS, spread

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.control_app:create_app()"
TOKEN = "integration-token-0123456789"


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[Gunicorn]:
    env = {
        "SSE_PUSH_BROKER_URL": redis_server.url,
        "SSE_PUSH_REDIS_PREFIX": f"pub-{uuid.uuid4().hex[:8]}:",
        "SSE_PUSH_PUBLISH_TOKEN": TOKEN,
        "SSE_PUSH_PUBLISH_MAX_BYTES": "4096",
    }
    with gunicorn(APP, env=env, workers=WORKERS) as running:
        yield running


def post(server: Gunicorn, body: object, token: str | None = TOKEN) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{server.url}/events/publish", json=body, headers=headers, timeout=10)


def test_it_delivers_to_both_workers(server: Gunicorn) -> None:
    clients = spread(server.port, "/events?channel=wire", 2)
    answer = post(server, [{"channel": "wire", "data": "one"}, {"channel": "wire", "data": [2]}])
    assert answer.status_code == 200
    ids = answer.json()["ids"]
    pump(clients, lambda: all(len(c.events) == 2 for c in clients), what="both events")
    for client in clients:
        assert [(e.data, e.id) for e in client.events] == [("one", ids[0]), ("[2]", ids[1])]
        client.close()


def test_it_refuses_with_the_documented_codes(server: Gunicorn) -> None:
    assert post(server, {"data": "x"}, token=None).status_code == 401
    assert post(server, {"data": "x"}, token="wrong-token-0123456789").status_code == 403
    bad = post(server, {"channel": "no spaces", "data": "x"})
    assert bad.status_code == 400 and bad.json()["field"] == "channel"
    assert post(server, {"data": "x" * 5000}).status_code == 413
    chunked = httpx.post(
        f"{server.url}/events/publish",
        content=iter([b'{"data": "', b"x" * 5000, b'"}']),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert chunked.status_code == 413
