"""Deep resumes against a real redis-server and a real gunicorn worker: what they cost.

Two scenarios of the attack on replay:

- ``wide``: 100 channels with 1,000 events of 1 KB each; requests naming all of
  them with ``Last-Event-ID: 0-0``.
- ``deep``: one channel with 100,000 events of 1 KB; requests resuming from its
  oldest event.

Reported, per scenario: the events and bytes each request got and whether it
ended with a ``reset``; the longest Redis command (``SLOWLOG``, all commands
over 1 ms) and the script calls (``INFO commandstats``); the longest delay of a
probe event published every 20 ms to another stream of the same worker (how
long Redis and the worker stalled everyone else); and the worker's peak RSS
growth (``VmHWM``).

``memory`` runs ``wide`` on the in-memory broker, in this process: how long
``subscribe()`` holds the broker's lock (every publisher of the worker waits that
long) and the peak RSS growth while the replay is drained and encoded.

Usage: ``python bench/replay.py [wide|deep|memory] [--concurrent N]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import sys
import threading
import time
import typing as t

import redis
from procs import ROOT, Processes, children, free_port, redis_server

sys.path.insert(0, str(ROOT))

from flask_sse_push.brokers._redis_common import publish_args  # noqa: E402
from flask_sse_push.brokers._redis_scripts import entry_fields  # noqa: E402

from flask_sse_push import MemoryBroker, ServerSentEvent  # noqa: E402
from flask_sse_push.brokers.redis import RedisBroker  # noqa: E402

PAYLOAD = "x" * 1000


def fill(url: str, channels: list[str], per_channel: int, history: int) -> None:
    """Publish through the broker's own script, pipelined, round-robin over ``channels``."""
    broker = RedisBroker.from_url(url, history=history)
    script = broker._publish_script
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    queued = 0
    for _ in range(per_channel):
        for channel in channels:
            event = ServerSentEvent(PAYLOAD)
            message, fields = entry_fields(event)
            keys = [f"sse:stream:{channel}", "sse:clock", f"sse:ids:{channel}"]
            args = publish_args(f"sse:channel:{channel}", history, message, event, fields)
            script(keys=keys, args=args, client=pipe)
            queued += 1
            if queued % 2000 == 0:
                pipe.execute()
    pipe.execute()
    client.close()
    broker.close()


def stream(port: int, path: str, last_event_id: str | None, until: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=until)
    head = f"GET {path} HTTP/1.0\r\nHost: x\r\nAccept: text/event-stream\r\n"
    if last_event_id is not None:
        head += f"Last-Event-ID: {last_event_id}\r\n"
    sock.sendall((head + "\r\n").encode())
    return sock


def resume(port: int, path: str, cursor: str) -> dict[str, t.Any]:
    """One deep resume: read until the replay is over (a reset, or 10 s of quiet).

    Run in a process of its own, so that reading megabytes does not delay the
    probe, which measures the server's stalls, not this one's.
    """
    result: dict[str, t.Any] = {}
    sock = stream(port, path, cursor, 120)
    sock.settimeout(10.0)
    started = last = time.monotonic()
    body = b""
    try:
        while b"event: reset" not in body[-4096:]:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            body += chunk
            last = time.monotonic()
    except TimeoutError:
        pass
    finally:
        sock.close()
    result["seconds"] = round(last - started, 2)  # to the last byte of the replay
    result["events"] = body.count(b"\ndata: ") + body.count(b"\r\ndata: ")
    result["bytes"] = len(body)
    result["reset"] = b"event: reset" in body
    return result


def probe(port: int, url: str, stop: threading.Event, delays: list[float]) -> None:
    """Publish a timestamp every 20 ms on the probe channel; record how late each arrives."""
    sock = stream(port, "/events?channel=probe", None, 10)
    buffer = b""
    while b"\r\n\r\n" not in buffer or not buffer.endswith(b"\n\n"):
        buffer += sock.recv(65536)  # the headers and the first chunk: subscribed
    sock.settimeout(0.005)
    client = redis.Redis.from_url(url)
    broker = RedisBroker(client)
    buffer = b""
    sent: dict[str, float] = {}
    n = 0
    next_send = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_send:
            sent[str(n)] = time.monotonic()
            broker.publish("probe", ServerSentEvent(str(n)))
            n += 1
            next_send = now + 0.02
        try:
            buffer += sock.recv(65536)
        except TimeoutError:
            continue
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    key = line[6:].decode()
                    if key in sent:
                        delays.append(time.monotonic() - sent.pop(key))
    if sent:
        oldest = min(sent.values())
        delays.append(time.monotonic() - oldest)  # never arrived: late by at least this
    sock.close()
    broker.close()


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def memory(concurrent: int) -> dict[str, t.Any]:
    """The ``wide`` resume on a :class:`MemoryBroker` in this process."""
    broker = MemoryBroker(history=1000)
    channels = [f"c{n:03d}" for n in range(100)]
    start = broker.cursor(channels)
    for n in range(1000):
        for channel in channels:
            broker.publish(channel, ServerSentEvent(f"{PAYLOAD}{channel}{n}"))
    rss_before = peak_rss(os.getpid())
    locked = []
    results = []
    subs = []
    for _ in range(concurrent):
        started = time.perf_counter()
        subs.append(broker.subscribe(channels, last_event_id=start))
        locked.append(time.perf_counter() - started)
    for sub in subs:
        events = sub.get(0)
        body = b"".join([event.encode() for event in events])
        results.append({"events": len(events), "bytes": len(body)})
        del events, body
    for sub in subs:
        sub.close()
    return {
        "scenario": "memory",
        "concurrent": concurrent,
        "requests": results,
        "longest_subscribe_ms": round(max(locked) * 1000, 1),
        "peak_rss_growth_mib": round((peak_rss(os.getpid()) - rss_before) / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=["wide", "deep", "memory"], default="wide", nargs="?")
    parser.add_argument("--concurrent", type=int, default=1)
    options = parser.parse_args()
    if options.scenario == "memory":
        print(json.dumps(memory(options.concurrent), indent=2))
        return 0
    if options.scenario == "wide":
        channels, per_channel, history = [f"c{n:03d}" for n in range(100)], 1000, 1000
    else:
        channels, per_channel, history = ["deep"], 100_000, 100_000
    path = "/events?" + "&".join(f"channel={name}" for name in channels)
    with Processes() as procs, redis_server(procs) as url:
        fill(url, channels, per_channel, history)
        admin = redis.Redis.from_url(url, decode_responses=True)
        cursor = "0-0"
        if options.scenario == "deep":
            cursor = admin.xrange("sse:stream:deep", count=1)[0][0]
        port = free_port()
        command = [
            sys.executable, "-m", "gunicorn", "-w", "1",
            "-k", "flask_sse_push.servers.gunicorn.GeventWorker",
            "-b", f"127.0.0.1:{port}", "app_push:create_app()",
        ]  # fmt: skip
        app = procs.start("gunicorn", command, env={"SSE_PUSH_BROKER_URL": url})
        app.wait_for_port(port)
        deadline = time.monotonic() + 30
        while not children(app.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = children(app.pid)[0]
        time.sleep(1.0)
        stop = threading.Event()
        delays: list[float] = []
        prober = threading.Thread(target=probe, args=(port, url, stop, delays))
        prober.start()
        time.sleep(1.0)
        admin.config_set("slowlog-log-slower-than", 1000)
        admin.config_set("slowlog-max-len", 10000)
        admin.slowlog_reset()
        admin.config_resetstat()
        rss_before = peak_rss(worker)
        with concurrent.futures.ProcessPoolExecutor(options.concurrent) as pool:
            # Start the readers' processes before the measured part.
            list(pool.map(time.sleep, [0.5] * options.concurrent))
            futures = [pool.submit(resume, port, path, cursor) for _ in range(options.concurrent)]
            results = [future.result(300) for future in futures]
        time.sleep(1.0)
        stop.set()
        prober.join(30)
        slow = admin.slowlog_get(10000)
        stats = admin.info("commandstats")
        scripts = stats.get("cmdstat_evalsha", {})
        report = {
            "scenario": options.scenario,
            "concurrent": options.concurrent,
            "requests": results,
            "redis_longest_command_ms": max((e["duration"] for e in slow), default=0) / 1000,
            "redis_commands_over_1ms": len(slow),
            "evalsha_calls": scripts.get("calls"),
            "evalsha_usec_per_call": scripts.get("usec_per_call"),
            "probe_events": len(delays),
            "probe_worst_delay_ms": round(max(delays, default=0) * 1000, 1),
            "worker_peak_rss_growth_mib": round((peak_rss(worker) - rss_before) / 2**20, 1),
        }
        admin.close()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
