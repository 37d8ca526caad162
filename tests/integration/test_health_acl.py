"""Health that tells the truth: a broker whose Redis user lacks ACL rights is not ``ok``."""

from __future__ import annotations

import logging
import os
import time
import typing as t
import uuid

import pytest
from flask import Flask

from flask_sse_push import ServerSentEvent, SSEPush
from flask_sse_push.brokers.redis import ACL_COMMANDS, RedisBroker
from flask_sse_push.exceptions import BrokerError
from flask_sse_push.servers.base import Server
from flask_sse_push.testing import open_stream
from tests.support.redis_helpers import Inspector, redis_client, take
from tests.support.servers import RedisServer, free_port

if t.TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration


@pytest.fixture(name="admin")
def admin_fixture(redis_server: RedisServer) -> Iterator[Inspector]:
    client = redis_client(redis_server)
    yield client
    client.close()


def _user(admin: Inspector, server: RedisServer, prefix: str, *rules: str) -> str:
    """Create an ACL user limited to ``prefix`` and ``rules``; return its URL."""
    name = f"u{uuid.uuid4().hex[:8]}"
    rights = ("on", ">pw", f"~{prefix}*", f"&{prefix}*", *rules)
    admin.execute_command("ACL", "SETUSER", name, *rights)  # type: ignore[no-untyped-call]
    return f"redis://{name}:pw@127.0.0.1:{server.port}/0"


#: Least-privilege users an operator might write, each lacking rights the broker needs.
LACKING = {
    "read commands, no scripts": ("+@read", "+ping", "+subscribe"),
    "scripts, no writes": (
        "+ping", "+eval", "+evalsha", "+time", "+hget", "+hmget", "+xrange",
        "+xrevrange", "+subscribe", "+unsubscribe", "+client|setname",
    ),
}  # fmt: skip


@pytest.mark.parametrize("rules", LACKING.values(), ids=LACKING.keys())
def test_health_fails_when_the_redis_user_cannot_publish(
    app: Flask,
    redis_server: RedisServer,
    admin: Inspector,
    rules: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    url = _user(admin, redis_server, prefix, *rules)
    app.config.update(SSE_PUSH_BROKER_URL=url, SSE_PUSH_REDIS_PREFIX=prefix)
    sse = SSEPush(app)
    client = app.test_client()
    try:
        with app.app_context(), pytest.raises(BrokerError):
            sse.publish("hello")  # the broker really cannot work
        with caplog.at_level(logging.ERROR, "flask_sse_push"):
            answer = client.get("/events/health")
        assert answer.status_code == 503
        # Nothing about Redis, its address or its user in the public answer.
        body = answer.get_json()
        assert body.pop("worker")["pid"] == os.getpid()
        assert body == {"status": "unavailable"}
        with app.app_context():
            problem = sse.stats()["broker_problem"]
        assert "ACL rights" in problem
        assert "EVAL" in problem if "+eval" not in rules else "PUBLISH" in problem
        assert "ACL SETUSER" in problem
        assert problem in caplog.text
    finally:
        with app.app_context():
            app.extensions["sse_push"].broker.close()


def test_the_documented_rights_are_enough(
    app: Flask, redis_server: RedisServer, admin: Inspector
) -> None:
    """The rights docs/deploying.md lists: the check passes and the broker works."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    url = _user(admin, redis_server, prefix, *ACL_COMMANDS.split())
    app.config.update(SSE_PUSH_BROKER_URL=url, SSE_PUSH_REDIS_PREFIX=prefix)
    sse = SSEPush(app)
    client = app.test_client()
    try:
        assert client.get("/events/health").status_code == 200
        with app.app_context():
            first = sse.publish("one", id="custom-1")
            with open_stream(client, channels=["default"], last_event_id=first) as stream:
                sse.publish("two")
                assert stream.next_event(timeout=10).data == "two"
            assert sse.stats()["broker_problem"] is None
    finally:
        with app.app_context():
            app.extensions["sse_push"].broker.close()


def test_missing_rights_are_named_at_start(
    redis_server: RedisServer, admin: Inspector, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's start checks the rights once, off the request path, and logs what lacks."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    rules = [rule for rule in ACL_COMMANDS.split() if rule not in ("+xadd", "+subscribe")]
    url = _user(admin, redis_server, prefix, *rules)
    app = Flask(__name__)
    app.config.update(SSE_PUSH_BROKER_URL=url, SSE_PUSH_REDIS_PREFIX=prefix)
    SSEPush(app)
    runtime = app.extensions["sse_push"]
    try:
        with caplog.at_level(logging.ERROR, "flask_sse_push"):
            runtime.start(Server())
            deadline = time.monotonic() + 10
            while runtime.metrics.broker_problem is None and time.monotonic() < deadline:
                time.sleep(0.05)
        problem = runtime.metrics.broker_problem
        assert problem is not None
        assert f"XADD {prefix}stream:default" in problem
        assert f"SUBSCRIBE {prefix}channel:default" in problem
        assert "PUBLISH" not in problem
        assert problem in caplog.text
    finally:
        runtime.broker.close()


def test_the_503_of_an_unreachable_redis_names_no_host(app: Flask) -> None:
    port = free_port()
    sse = SSEPush(app, broker=RedisBroker.from_url(f"redis://127.0.0.1:{port}/0"))
    try:
        answer = app.test_client().get("/events/health")
        assert answer.status_code == 503
        assert str(port) not in answer.text
        with app.app_context():
            assert f"127.0.0.1:{port}" in sse.stats()["broker_problem"]
    finally:
        with app.app_context():
            sse.broker.close()


def test_the_check_passes_where_redis_cannot_tell() -> None:
    """fakeredis (like Redis before 7.0) has no ``redis.acl_check_cmd``: only PING counts."""
    fakeredis = pytest.importorskip("fakeredis")
    broker = RedisBroker(fakeredis.FakeRedis(), prefix="t:")
    broker.check()
    broker.publish("default", ServerSentEvent("x"))
    with broker.subscribe(["default"], last_event_id="0-0") as sub:
        assert [event.data for event in take(sub, 1)] == ["x"]
    broker.close()
