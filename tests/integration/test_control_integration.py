"""Revoke everywhere under real ``gunicorn -w 2`` on a real redis-server and a
real 3-master Redis Cluster: a revoke made in either worker ends the matching
streams of both workers within a second, and leaves the others alone."""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import time
import typing as t
import uuid

import httpx
import pytest

from flask_sse_push.stream import STOP_ID
from tests.support.redis_helpers import SSEClient, pump
from tests.support.servers import ROOT, Gunicorn, gunicorn
from tests.support.spread import WORKERS, answered, ended, spread

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.control_app:create_app()"
TRIALS = 20
#: What "within 1 s" allows: the revoke's HTTP round trip is inside it.
BOUND = 1.0


@dataclasses.dataclass
class Site:
    server: Gunicorn
    env: dict[str, str]


@pytest.fixture(params=["redis", "cluster"], scope="module")
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    backend = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster"
    )
    env = {
        "SSE_PUSH_BROKER_URL": backend.url,
        "SSE_PUSH_REDIS_PREFIX": f"ctl-{uuid.uuid4().hex[:8]}:",
    }
    with gunicorn(APP, env=env, workers=WORKERS) as running:
        yield Site(running, env)


@pytest.fixture
def server(site: Site) -> Gunicorn:
    return site.server


def assert_open(clients: list[SSEClient], within: float = 0.2) -> None:
    """Fail if any of ``clients`` ends within ``within`` seconds; then close them."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for client in clients:
            client.feed()
            assert not client.ended, "a stream the revoke did not select ended"
        time.sleep(0.02)
    for client in clients:
        client.close()


def revoke_from(server: Gunicorn, pid: str, **params: str) -> float:
    """POST the revoke until worker ``pid`` takes it; return when it was sent."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for _ in range(200):
            sent = time.monotonic()
            answer = client.post(
                "/revoke", params={"pid": pid, **params}, headers={"Connection": "close"}
            )
            if answer.status_code == 200:
                return sent
            assert answer.status_code == 409
    pytest.fail(f"worker {pid} never took the revoke")


def test_revoke_from_either_worker_ends_streams_in_both(server: Gunicorn) -> None:
    timings: list[float] = []
    origins: list[str] = []
    for trial in range(TRIALS):
        user = str(1000 + trial)  # an int identity, selected by its text
        targets = spread(server.port, f"/events?channel=room&user={user}", 4)
        bystanders = spread(server.port, f"/events?channel=room&user=other{trial}", 2)
        workers = sorted({c.worker for c in targets if c.worker is not None})
        origin = workers[trial % WORKERS]
        sent = revoke_from(server, origin, identity=user)
        pump(
            targets,
            ended(targets),
            timeout=10,
            what="the revoked streams to end",
        )
        took = time.monotonic() - sent
        timings.append(took)
        origins.append(origin)
        assert all(c.last_event_id == STOP_ID for c in targets)
        assert_open(bystanders)
        # The plain EventSource's one reconnect is answered 204.
        again = SSEClient(server.port, f"/events?channel=room&user={user}", last_event_id=STOP_ID)
        pump([again], answered([again]), what="the reconnect's status")
        assert again.status == 204
        again.close()
    print(
        f"\nrevoke timings over {TRIALS} trials: median {statistics.median(timings) * 1000:.1f} ms,"
        f" worst {max(timings) * 1000:.1f} ms, from workers {sorted(set(origins))}"
    )
    assert len(set(origins)) == WORKERS
    assert max(timings) < BOUND, timings


def test_revoke_by_channel_reaches_both_workers(server: Gunicorn) -> None:
    channel = f"ch-{uuid.uuid4().hex[:6]}"
    targets = spread(server.port, f"/events?channel={channel}&user=a", 4)
    kept = spread(server.port, "/events?channel=elsewhere&user=a", 2)
    revoke_from(server, sorted({c.worker or "" for c in targets})[0], channel=channel)
    pump(targets, ended(targets), timeout=BOUND + 2, what="ended")
    assert_open(kept)


def test_the_cli_revokes_in_both_workers(site: Site) -> None:
    """``flask sse revoke`` from a shell, with the app's config and SECRET_KEY."""
    targets = spread(site.server.port, "/events?channel=cli-room&user=77", 4)
    kept = spread(site.server.port, "/events?channel=cli-room&user=78", 2)
    command = [sys.executable, "-m", "flask", "--app", "tests.apps.control_app:create_app"]
    done = subprocess.run(
        [*command, "sse", "revoke", "--channel", "cli-room", "--identity", "77"],
        cwd=ROOT, env={**os.environ, **site.env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pump(targets, ended(targets), timeout=BOUND + 2, what="the revoked streams to end")
    assert all(c.last_event_id == STOP_ID for c in targets)
    assert_open(kept)
