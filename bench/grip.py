"""GRIP bench: idle streams held by Pushpin, and broadcast through it.

Two figures, both on 127.0.0.1 with a real Redis:

1. **Idle**: open up to ``--idle`` streams through Pushpin (the app under
   gunicorn's *sync* worker, two workers, in GRIP mode), in steps, and report
   the RSS of the Flask workers and of Pushpin (its runner, condure, proxy,
   handler, and zurl) at each step, and how many streams still got keepalives.
   It uses ``loadgen.py``'s idle scenario.
2. **Broadcast**: ``--clients`` streams, ``--events`` events published as fast
   as one publisher goes; deliveries per second through Pushpin (publishing
   with ``Publisher(grip_url=...)``), next to the same streams held in-process
   by the package's gevent worker class on the same Redis.

Run from the repository root: ``python bench/grip.py`` (about a minute and a
half; it loads the machine). It prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import rss_bytes  # noqa: E402
from bench.procs import children, raise_nofile  # noqa: E402
from flask_sse_push import Publisher  # noqa: E402
from tests.support.pushpin import Pushpin, start_grip_app  # noqa: E402
from tests.support.servers import (  # noqa: E402
    GEVENT_WORKER,
    RedisServer,
    free_port,
    start_gunicorn,
    stop,
)

KEY = "bench-grip-key-that-is-32-bytes-long"
MARK = b"~B~"


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found = [pid]
    for child in children(pid):
        found += tree(child)
    return found


class Sampler(threading.Thread):
    """Samples the RSS of two groups of processes every half second."""

    def __init__(self, groups: dict[str, t.Callable[[], list[int]]]) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.peak = dict.fromkeys(groups, 0)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for name, pids in self.groups.items():
                self.peak[name] = max(self.peak[name], rss_bytes(pids()))


def idle(
    pushpin: Pushpin, workers: list[int], count: int, keepalive: float, concurrency: int
) -> dict[str, t.Any]:
    steps = sorted({min(count, n) for n in (1000, count // 2, count)})
    pushpin_pids = [*tree(pushpin.pushpin.pid)] if pushpin.pushpin else []
    if pushpin.zurl is not None:
        pushpin_pids.append(pushpin.zurl.pid)
    before = {"workers": rss_bytes(workers), "pushpin": rss_bytes(pushpin_pids)}
    sampler = Sampler({"workers": lambda: workers, "pushpin": lambda: pushpin_pids})
    sampler.start()
    config = {
        "mode": "idle",
        "port": pushpin.port,
        "path": "/events?channel=idle",
        "rss_pids": workers,
        "keepalive": keepalive,
        "steps": steps,
        "concurrency": concurrency,
        "step_timeout": 240,
    }
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "loadgen.py"), json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    sampler.stopped.set()
    sampler.join()
    result = json.loads(out.stdout) if out.stdout.strip() else {"ok": False, "why": out.stderr}
    mib = 1024 * 1024
    return {
        "steps": [
            {"open": s["open"], "kept_alive": s["kept"], "workers_rss_mib": s["rss"] / mib}
            for s in result.get("steps", [])
        ],
        "workers_rss_mib_before": before["workers"] / mib,
        "workers_rss_mib_peak": sampler.peak["workers"] / mib,
        "pushpin_rss_mib_before": before["pushpin"] / mib,
        "pushpin_rss_mib_peak": sampler.peak["pushpin"] / mib,
        "loadgen": {k: v for k, v in result.items() if k not in {"steps"}},
    }


def open_clients(port: int, count: int, path: str) -> list[socket.socket]:
    request = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(request.encode())
        socks.append(sock)
    for sock in socks:  # every stream answered before the clock starts
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        sock.setblocking(False)
    return socks


def broadcast(
    channel: str, port: int, publish: t.Callable[[str], object], clients: int, events: int
) -> dict[str, t.Any]:
    socks = open_clients(port, clients, f"/events?channel={channel}")
    counts = dict.fromkeys((s.fileno() for s in socks), 0)
    tails = dict.fromkeys(counts, b"")
    poll = select.epoll()
    for sock in socks:
        poll.register(sock.fileno(), select.EPOLLIN)
    done = threading.Event()

    def publisher() -> None:
        for n in range(events):
            publish(f"~B~{n}")
        done.set()

    began = time.monotonic()
    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    expected = clients * events
    delivered = 0
    closed = 0
    deadline = began + 120
    by_fd = {s.fileno(): s for s in socks}
    settled = False
    while delivered < expected and time.monotonic() < deadline and not settled:
        for fd, _ in poll.poll(0.2):
            try:
                data = by_fd[fd].recv(262144)
            except BlockingIOError:
                continue
            if not data:  # the proxy ended the stream (a browser would resume)
                poll.unregister(fd)
                closed += 1
                settled = closed + sum(1 for n in counts.values() if n >= events) >= clients
                continue
            chunk = tails[fd] + data
            found = chunk.count(MARK)
            tails[fd] = chunk[-(len(MARK) - 1) :] if not chunk.endswith(MARK) else b""
            counts[fd] += found
            delivered += found
    elapsed = time.monotonic() - began
    thread.join(60)
    published_s = elapsed if not done.is_set() else None
    poll.close()
    for sock in socks:
        sock.close()
    return {
        "clients": clients,
        "events": events,
        "delivered": delivered,
        "expected": expected,
        "elapsed_s": round(elapsed, 3),
        "deliveries_per_s": round(delivered / elapsed),
        "events_per_s": round(events / elapsed, 1),
        "unfinished_publisher": published_s is not None,
        "per_client_min": min(counts.values()),
        "per_client_max": max(counts.values()),
        "clients_short": sum(1 for n in counts.values() if n < events),
        "streams_ended_by_proxy": closed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--keepalive", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=100, help="idle streams opening at once")
    parser.add_argument("--rate", default="20000", help="Pushpin message_rate of the raised run")
    parser.add_argument("--hwm", default="200000", help="Pushpin message_hwm of the raised run")
    args = parser.parse_args()
    nofile = raise_nofile(20000)
    report: dict[str, t.Any] = {"nofile": nofile}
    with RedisServer() as redis:
        port = free_port()
        keepalive = {"SSE_PUSH_KEEPALIVE": str(args.keepalive)}
        with Pushpin(port, KEY, client_maxconn=args.idle + 2000) as pushpin:
            app = start_grip_app(pushpin, redis.url, keepalive, extra_args=("--backlog", "4096"))
            try:
                workers = children(app.process.pid)
                if args.idle:
                    report["idle_through_pushpin"] = idle(
                        pushpin, workers, args.idle, args.keepalive, args.concurrency
                    )
                grip = Publisher(redis.url, grip_url=pushpin.publish_url)
                report["broadcast_through_pushpin_debian_limits"] = broadcast(
                    "bench",
                    pushpin.port,
                    lambda data: grip.publish(data, channel="bench"),
                    args.clients,
                    args.events,
                )
                grip.close()
            finally:
                stop(app.process)
        # Debian's handler delivers at most message_rate=2500 messages a second
        # and queues message_hwm=25000: the same run with both raised.
        raised = {"message_rate": args.rate, "message_hwm": args.hwm}
        report["raised_limits"] = raised
        port = free_port()
        with Pushpin(port, KEY, client_maxconn=args.clients + 500, handler=raised) as pushpin:
            app = start_grip_app(pushpin, redis.url, keepalive)
            try:
                grip = Publisher(redis.url, grip_url=pushpin.publish_url)
                report["broadcast_through_pushpin_raised_limits"] = broadcast(
                    "bench2",
                    pushpin.port,
                    lambda data: grip.publish(data, channel="bench2"),
                    args.clients,
                    args.events,
                )
                grip.close()
            finally:
                stop(app.process)
        env = {"SSE_PUSH_BROKER_URL": redis.url, "SSE_PUSH_KEEPALIVE": str(args.keepalive)}
        app = start_gunicorn(
            "tests.apps.redis_app:create_app()", env=env, workers=2, worker=GEVENT_WORKER
        )
        try:
            plain = Publisher(redis.url)
            report["broadcast_in_process"] = broadcast(
                "bench",
                app.port,
                lambda data: plain.publish(data, channel="bench"),
                args.clients,
                args.events,
            )
            plain.close()
        finally:
            stop(app.process)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
