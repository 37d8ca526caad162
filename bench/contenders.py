"""The servers under test, and how to start each on the server core."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import sys
import typing as t
from pathlib import Path

from procs import SERVER_CPU, Proc, Processes, free_port, pinned, redis_server_path

if t.TYPE_CHECKING:
    from collections.abc import Mapping


@dataclasses.dataclass
class Server:
    """A started contender: where to connect and which processes to measure."""

    port: int
    path: str
    workers: list[int]
    keepalive_marker: str


def _missing_modules(*names: str) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def _pip_install(*names: str) -> str | None:
    """Say which of ``names`` to install, or None if all are there."""
    missing = _missing_modules(*names)
    return f"n/a (pip install {' '.join(missing)})" if missing else None


#: This package's worker class, which carries the fast path (README's run command).
PUSH_WORKER = "flask_sse_push.servers.gunicorn.GeventWorker"

#: A checkout of flask_sse_push to compare with, side by side in one run
#: (``BENCH_BASELINE=/path/to/checkout``): the ``flask_sse_push_baseline`` row.
BASELINE = os.environ.get("BENCH_BASELINE")


def _gunicorn(
    procs: Processes,
    name: str,
    app: str,
    *,
    workers: int,
    env: Mapping[str, str],
    worker: str = "gevent",
) -> tuple[Proc, int]:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "-k", worker,
        "-w", str(workers),
        "--worker-connections", "100000",
        "--backlog", "4096",
        "--timeout", "120",
        "--graceful-timeout", "3",
        "-b", f"127.0.0.1:{port}",
        app,
    ]  # fmt: skip
    proc = procs.start(name, pinned(SERVER_CPU, command), env=env)
    proc.wait_for_port(port)
    return proc, port


@dataclasses.dataclass(frozen=True)
class Contender:
    """One row of every table: a library (or the limit) and how it is run."""

    name: str
    description: str
    #: Whether ``--smoke`` runs it by default: it needs only the test extras.
    smoke: bool
    #: Sends nothing, not even the status line, before the first event.
    silent_until_event: bool = False

    def unavailable(self) -> str | None:
        """Why this contender cannot run here, or None if it can."""
        raise NotImplementedError

    def start(
        self, procs: Processes, *, workers: int, keepalive: float, redis_url: str | None
    ) -> Server:
        raise NotImplementedError

    @property
    def needs_redis(self) -> bool:
        return False

    @property
    def needs_cluster(self) -> bool:
        return False


class FlaskSSEPush(Contender):
    #: Direct writes on (the default); off wakes every stream's greenlet instead.
    direct = True
    #: The gunicorn worker class it is served with.
    worker = PUSH_WORKER

    def unavailable(self) -> str | None:
        return _pip_install("gevent", "gunicorn")

    def start(
        self, procs: Processes, *, workers: int, keepalive: float, redis_url: str | None
    ) -> Server:
        env = {
            "SSE_PUSH_KEEPALIVE": str(keepalive),
            "SSE_PUSH_BROKER_URL": redis_url or "",
            "SSE_PUSH_DIRECT_WRITES": "1" if self.direct else "0",
        }
        env.update(self.extra_env())
        proc, port = _gunicorn(
            procs, self.name, "app_push:create_app()", workers=workers, env=env, worker=self.worker
        )
        return Server(port, "/events", proc.wait_for_children(workers), ": keepalive")

    def extra_env(self) -> dict[str, str]:
        return {}


class FlaskSSEPushWake(FlaskSSEPush):
    direct = False


class FlaskSSEPushBaseline(FlaskSSEPush):
    """The checkout named by ``BENCH_BASELINE``, served as its README says: with the
    package's worker class where the checkout has one, else ``-k gevent``."""

    @property
    def worker(self) -> str:  # type: ignore[override]
        assert BASELINE is not None
        own = Path(BASELINE) / "flask_sse_push" / "servers" / "_gevent_worker.py"
        return PUSH_WORKER if own.is_file() else "gevent"

    def unavailable(self) -> str | None:
        if not BASELINE or not (Path(BASELINE) / "flask_sse_push").is_dir():
            return "n/a (set BENCH_BASELINE to a checkout of flask_sse_push)"
        return super().unavailable()

    def extra_env(self) -> dict[str, str]:
        assert BASELINE is not None
        return {"PYTHONPATH": str(Path(BASELINE).resolve())}


class FlaskSSEPushRedis(FlaskSSEPush):
    @property
    def needs_redis(self) -> bool:
        return True

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("flask_sse_push.brokers.redis") is None:
            return "n/a (redis broker missing)"
        if _missing_modules("redis"):
            return "n/a (pip install redis)"
        if redis_server_path() is None:
            return "n/a (redis-server missing)"
        return super().unavailable()


def spread_channels(count: int = 3) -> list[str]:
    """Channel names whose slots fall in each third of the slot range: one per master
    of a 3-master cluster as ``redis-cli --cluster create`` splits it."""
    from redis.crc import key_slot

    found: dict[int, str] = {}
    for n in range(1000):
        name = f"b{n}"
        third = key_slot(f"sse:{{{name}}}".encode()) * count // 16384
        found.setdefault(third, name)
        if len(found) == count:
            return [found[i] for i in range(count)]
    raise RuntimeError("no channel names spread over the slot range")


class FlaskSSEPushRedisSpread(FlaskSSEPushRedis):
    """Every client on three channels, the publisher going round them: the cluster's
    workload, on one redis-server, for comparison."""

    def start(
        self, procs: Processes, *, workers: int, keepalive: float, redis_url: str | None
    ) -> Server:
        channels = spread_channels()
        env = {
            "SSE_PUSH_KEEPALIVE": str(keepalive),
            "SSE_PUSH_BROKER_URL": redis_url or "",
            "SSE_PUSH_BENCH_CHANNELS": ",".join(channels),
        }
        proc, port = _gunicorn(
            procs, self.name, "app_push:create_app()", workers=workers, env=env, worker=self.worker
        )
        path = "/events?" + "&".join(f"channel={name}" for name in channels)
        return Server(port, path, proc.wait_for_children(workers), ": keepalive")


class FlaskSSEPushCluster(FlaskSSEPushRedisSpread):
    """The same three channels on a 3-master Redis Cluster: one channel per shard."""

    @property
    def needs_cluster(self) -> bool:
        return True

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("flask_sse_push.brokers.redis_cluster") is None:
            return "n/a (redis cluster broker missing)"
        if shutil.which("redis-cli") is None:
            return "n/a (redis-cli missing)"
        return super().unavailable()


class FlaskSSE(Contender):
    @property
    def needs_redis(self) -> bool:
        return True

    def unavailable(self) -> str | None:
        missing = _missing_modules("flask_sse", "gevent", "gunicorn", "redis")
        if missing:
            return "n/a (pip install -r bench/requirements.txt)"
        if redis_server_path() is None:
            return "n/a (redis-server missing)"
        return None

    def start(
        self, procs: Processes, *, workers: int, keepalive: float, redis_url: str | None
    ) -> Server:
        assert redis_url is not None
        proc, port = _gunicorn(
            procs,
            self.name,
            "app_flask_sse:create_app()",
            workers=workers,
            env={"SSE_REDIS_URL": redis_url},
        )
        # flask-sse sends no keepalives at all.
        return Server(port, "/stream", proc.wait_for_children(workers), ": keepalive")


class SSEStarlette(Contender):
    def unavailable(self) -> str | None:
        missing = _missing_modules("sse_starlette", "uvicorn")
        return "n/a (pip install -r bench/requirements.txt)" if missing else None

    def start(
        self, procs: Processes, *, workers: int, keepalive: float, redis_url: str | None
    ) -> Server:
        port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", "app_starlette:app",
            "--host", "127.0.0.1", "--port", str(port),
            "--backlog", "4096", "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        env = {"BENCH_PING": str(keepalive)}
        proc = procs.start(self.name, pinned(SERVER_CPU, command), env=env)
        proc.wait_for_port(port)
        return Server(port, "/events", [proc.pid], ": ping")


class WSGIFloor(Contender):
    def unavailable(self) -> str | None:
        return _pip_install("gevent", "gunicorn")

    def start(
        self, procs: Processes, *, workers: int, keepalive: float, redis_url: str | None
    ) -> Server:
        env = {"BENCH_KEEPALIVE": str(keepalive)}
        proc, port = _gunicorn(procs, self.name, "app_wsgi_floor:app", workers=workers, env=env)
        return Server(port, "/events", proc.wait_for_children(workers), ": keepalive")


class Limit(Contender):
    """A bare gevent server of the bench's own, run as ``script PORT KEEPALIVE``."""

    script = "limit_server.py"

    def unavailable(self) -> str | None:
        return _pip_install("gevent")

    def start(
        self, procs: Processes, *, workers: int, keepalive: float, redis_url: str | None
    ) -> Server:
        port = free_port()
        command = [sys.executable, self.script, str(port), str(keepalive)]
        proc = procs.start(self.name, pinned(SERVER_CPU, command))
        proc.wait_for_port(port)
        return Server(port, "/events", [proc.pid], ": keepalive")


class ParkedFloor(Limit):
    script = "parked_floor.py"


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        FlaskSSEPush(
            "flask_sse_push",
            f"flask_sse_push, memory broker, gunicorn -k {PUSH_WORKER}",
            True,
        ),
        FlaskSSEPushBaseline(
            "flask_sse_push_baseline",
            "flask_sse_push as checked out at BENCH_BASELINE, memory broker,"
            " served as its README says",
            False,
        ),
        FlaskSSEPushWake(
            "flask_sse_push_wake",
            "flask_sse_push, SSE_PUSH_DIRECT_WRITES off (only when asked for)",
            False,
        ),
        FlaskSSEPushRedis(
            "flask_sse_push_redis",
            f"flask_sse_push, Redis broker, gunicorn -k {PUSH_WORKER}",
            True,
        ),
        FlaskSSEPushRedisSpread(
            "redis_3ch",
            "flask_sse_push, Redis broker, clients on 3 channels, publisher round them",
            False,
        ),
        FlaskSSEPushCluster(
            "redis_cluster",
            "flask_sse_push, Redis Cluster broker (3 masters), 3 channels, one per shard",
            False,
        ),
        FlaskSSE("flask_sse", "flask-sse (incumbent), Redis, gunicorn -k gevent", False, True),
        SSEStarlette("sse_starlette", "sse-starlette, asyncio queues, uvicorn", False),
        WSGIFloor("wsgi_floor", "a bare WSGI generator on gunicorn -k gevent (idle only)", True),
        Limit("limit", "bare gevent StreamServer, pre-encoded bytes", True),
        ParkedFloor(
            "parked_floor",
            "bare gevent StreamServer keeping only each socket, one keepalive timer (idle only)",
            True,
        ),
    )
}
