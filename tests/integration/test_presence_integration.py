"""Presence across ``gunicorn -w 2`` on a real redis-server and a real
3-master Redis Cluster: exact with three identities spread over both workers,
and a worker killed with SIGKILL drops out within ``SSE_PUSH_PRESENCE_TTL``."""

from __future__ import annotations

import os
import signal
import time
import typing as t
import uuid

import httpx
import pytest

from tests.support.redis_helpers import (
    SSEClient,
    pump,
)
from tests.support.servers import Gunicorn, gunicorn
from tests.support.spread import WORKERS, spread

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.control_app:create_app()"
TTL = 3.0
#: What the bound allows beyond the TTL: the poll interval and a loaded machine.
SLACK = 2.0


@pytest.fixture(params=["redis", "cluster"])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    backend = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster"
    )
    env = {
        "SSE_PUSH_BROKER_URL": backend.url,
        "SSE_PUSH_REDIS_PREFIX": f"prs-{uuid.uuid4().hex[:8]}:",
        "SSE_PUSH_PRESENCE_TTL": str(TTL),
    }
    with gunicorn(APP, env=env, workers=WORKERS) as running:
        yield running


def presence(server: Gunicorn, channel: str) -> dict[str, int]:
    """Identity's ``repr()`` (so ``7`` and ``"7"`` stay apart) -> streams."""
    answer = httpx.get(f"{server.url}/presence", params={"channel": channel}, timeout=10)
    assert answer.status_code == 200
    return {repr(identity): count for identity, count in answer.json()}


def settle(server: Gunicorn, channel: str, expected: dict[str, int], timeout: float) -> float:
    """Poll until every worker answers ``expected``; return when it first did
    (``time.monotonic()``) in the run of agreeing answers that ended the wait."""
    start = time.monotonic()
    agreeing = 0
    since = start
    while time.monotonic() - start < timeout:
        asked = time.monotonic()
        if presence(server, channel) == expected:
            if agreeing == 0:
                since = asked
            agreeing += 1
        else:
            agreeing = 0
        if agreeing >= 6:  # several answers in a row, so both workers are asked
            return since
        time.sleep(0.05)
    pytest.fail(f"presence never settled on {expected}: {presence(server, channel)}")


def test_presence_is_exact_and_a_killed_worker_drops_out(server: Gunicorn) -> None:
    channel = f"room-{uuid.uuid4().hex[:6]}"
    streams = {
        "7": spread(server.port, f"/events?channel={channel}&user=7", 2),
        "alice": spread(server.port, f"/events?channel={channel}&user=alice", 2),
        "bob": spread(server.port, f"/events?channel={channel}&user=bob", 4),
    }
    elsewhere = SSEClient(server.port, "/events?channel=hall&user=alice")
    pump([elsewhere], lambda: elsewhere.status is not None, what="headers")
    settle(server, channel, {"7": 2, "'alice'": 2, "'bob'": 4}, timeout=10)
    # One stream of each identity ends by the client's hand.
    for clients in streams.values():
        clients.pop().close()
    settle(server, channel, {"7": 1, "'alice'": 1, "'bob'": 3}, timeout=10)
    # Kill one worker outright: no goodbye, its record must expire.
    victim = streams["bob"][0].worker
    assert victim is not None
    survivors = {
        repr(int(user) if user.isdigit() else user): sum(c.worker != victim for c in clients)
        for user, clients in streams.items()
    }
    survivors = {identity: count for identity, count in survivors.items() if count}
    os.kill(int(victim), signal.SIGKILL)
    killed = time.monotonic()
    gone = settle(server, channel, survivors, timeout=TTL + SLACK + 10) - killed
    print(f"\nkilled worker's presence gone after {gone:.2f} s (TTL {TTL} s)")
    assert gone <= TTL + SLACK
    stats = httpx.get(f"{server.url}/stats", params={"scope": "deployment"}, timeout=10).json()
    assert len(stats["workers"]) == WORKERS  # the survivor and the replacement
    assert stats["clients_by_channel"][channel] == sum(survivors.values())
    for clients in [*streams.values(), [elsewhere]]:
        for client in clients:
            client.close()
