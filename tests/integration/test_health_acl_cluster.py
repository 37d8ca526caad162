"""Health that tells the truth on Redis Cluster: ACL rights are checked on every master."""

from __future__ import annotations

import contextlib
import os
import typing as t
import uuid

import pytest
from flask import Flask

from flask_sse_push import SSEPush
from flask_sse_push.brokers.redis_cluster import ACL_COMMANDS
from flask_sse_push.testing import open_stream
from tests.support.cluster_helpers import RedisCluster

pytestmark = pytest.mark.integration


def _user(cluster: RedisCluster, prefix: str, rules: t.Sequence[str]) -> str:
    """Create the same ACL user on every node; return the broker URL that logs in as it."""
    name = f"u{uuid.uuid4().hex[:8]}"
    for port in cluster.alive_ports():
        with contextlib.closing(cluster.node(port)) as node:
            rights = ("on", ">pw", f"~{prefix}*", f"&{prefix}*", *rules)
            node.execute_command("ACL", "SETUSER", name, *rights)
    hosts = ",".join(f"127.0.0.1:{port}" for port in cluster.ports)
    return f"redis+cluster://{name}:pw@{hosts}"


def _app(app: Flask, url: str, prefix: str) -> SSEPush:
    app.config.update(SSE_PUSH_BROKER_URL=url, SSE_PUSH_REDIS_PREFIX=prefix)
    return SSEPush(app)


def test_the_documented_cluster_rights_are_enough(app: Flask, redis_cluster: RedisCluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    sse = _app(app, _user(redis_cluster, prefix, ACL_COMMANDS.split()), prefix)
    client = app.test_client()
    try:
        assert client.get("/events/health").status_code == 200
        with app.app_context():
            first = sse.publish("one", id="custom-1", channel="orders")
            with open_stream(client, channels=["orders"], last_event_id=first) as stream:
                sse.publish("two", channel="orders")
                assert stream.next_event(timeout=10).data == "two"
            assert sse.stats()["broker_problem"] is None
    finally:
        app.extensions["sse_push"].broker.close()


def test_a_missing_sharded_pubsub_right_fails_health(
    app: Flask, redis_cluster: RedisCluster
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    rules = [rule for rule in ACL_COMMANDS.split() if rule not in ("+spublish", "+ssubscribe")]
    sse = _app(app, _user(redis_cluster, prefix, rules), prefix)
    try:
        answer = app.test_client().get("/events/health")
        assert answer.status_code == 503
        body = answer.get_json()
        assert body.pop("worker")["pid"] == os.getpid()
        assert body == {"status": "unavailable"}
        with app.app_context():
            problem = sse.stats()["broker_problem"]
        assert f"SPUBLISH {prefix}{{default}}" in problem
        assert f"SSUBSCRIBE {prefix}{{default}}" in problem
        assert "XADD" not in problem
    finally:
        app.extensions["sse_push"].broker.close()
