"""Fixtures that start processes: a redis-server and Redis Clusters on 127.0.0.1,
and headless Chromium.

Each skips (or fails under ``SSE_PUSH_TESTS_STRICT=1``) when ``redis-server`` is
not installed, through :func:`tests.support.servers.missing`.
"""

from __future__ import annotations

import typing as t

import pytest

from tests.support.browser_helpers import chromium
from tests.support.cluster_helpers import RedisCluster
from tests.support.redis_helpers import Inspector, redis_client
from tests.support.servers import RedisServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the whole module (tests keep apart by key prefix)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def inspector(redis_server: RedisServer) -> Iterator[Inspector]:
    """A plain client of the module's redis-server, to look at what the brokers did."""
    client = redis_client(redis_server)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three masters and no replicas, shared by the session (tests keep apart by prefix)."""
    with RedisCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def failover_cluster() -> Iterator[RedisCluster]:
    """Three masters with one replica each, for a module that kills masters."""
    with RedisCluster(masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium for the whole module (tests open pages of their own)."""
    with chromium() as launched:
        yield launched
