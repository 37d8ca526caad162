"""``SSE_PUSH_*`` keys the app does not set come from the environment, as the docs write them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from flask import Flask

from flask_sse_push import SSEPush
from flask_sse_push.brokers.redis import RedisBroker
from tests.support.redis_helpers import redis_client
from tests.support.servers import ROOT, RedisServer


def _flask(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SSE_PUSH_")}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "tests.apps.plain_app", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration
def test_sse_publish_takes_the_broker_url_from_the_environment(redis_server: RedisServer) -> None:
    """Before: exit 1, "SSE_PUSH_BROKER_URL is not set", unless the app copied it."""
    done = _flask(
        "sse",
        "publish",
        "--channel",
        "orders",
        "hello",
        env={"SSE_PUSH_BROKER_URL": redis_server.url, "SSE_PUSH_REDIS_PREFIX": "envtest:"},
    )
    assert done.returncode == 0, done.stderr
    inspector = redis_client(redis_server)
    try:
        entries = inspector.xrange("envtest:stream:orders") or []
    finally:
        inspector.close()
    assert [entry_id for entry_id, _ in entries] == [done.stdout.strip()]


def test_the_message_says_where_it_looked() -> None:
    done = _flask("sse", "publish", "hello", env={})
    assert done.returncode == 1
    assert "neither in the app's config nor in the environment" in done.stderr


def test_the_app_config_wins_over_the_environment(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSE_PUSH_KEEPALIVE", "2.5")
    monkeypatch.setenv("SSE_PUSH_RETRY", "700")
    monkeypatch.setenv("SSE_PUSH_REDIS_PREFIX", "x:")
    monkeypatch.setenv("SSE_PUSH_BROKER_URL", "redis://127.0.0.1:1/0")
    app.config["SSE_PUSH_KEEPALIVE"] = 0.05
    SSEPush(app)
    # Read as JSON where it parses, else as text.
    assert app.config["SSE_PUSH_KEEPALIVE"] == 0.05
    assert app.config["SSE_PUSH_RETRY"] == 700
    assert app.config["SSE_PUSH_REDIS_PREFIX"] == "x:"
    runtime = app.extensions["sse_push"]
    assert isinstance(runtime.broker, RedisBroker)
    assert runtime.broker.prefix == "x:"
    runtime.broker.close()


def test_an_invalid_value_from_the_environment_names_the_key(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSE_PUSH_SEND_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SSE_PUSH_SEND_TIMEOUT must be a number"):
        SSEPush(app)
