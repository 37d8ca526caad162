"""Connection lifecycle against a real ``gunicorn -k gevent``.

Shutdown with 200 open streams, a reload, slow and stalled readers, a peer that
vanishes without a FIN, the maximum lifetime with a reconnecting client,
capacity, and the TCP options on the client socket. Measured figures are
printed (``pytest -s``) and attached to the test report as properties.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import typing as t

import httpx
import pytest
from httpx_sse import connect_sse

from flask_sse_push.stream import STOP_ID
from tests.apps.lifecycle_app import environment
from tests.support.raw_client import RawStream, pump, wait_for
from tests.support.servers import ROOT, Gunicorn, gunicorn, missing

pytestmark = pytest.mark.integration

APP = "tests.apps.lifecycle_app:create_app()"


def _stats(server: Gunicorn) -> dict[str, t.Any]:
    reply = httpx.get(f"{server.url}/stats", timeout=10)
    reply.raise_for_status()
    result: dict[str, t.Any] = reply.json()
    return result


def _publish(server: Gunicorn, data: str, *, channel: str = "default", count: int = 1) -> list[str]:
    reply = httpx.post(
        f"{server.url}/publish",
        json={"channel": channel, "data": data, "count": count},
        timeout=10,
    )
    reply.raise_for_status()
    ids: list[str] = reply.json()["ids"]
    return ids


def _open(server: Gunicorn, count: int, path: str = "/events?channel=room") -> list[RawStream]:
    streams: list[RawStream] = []
    try:
        for _ in range(count):
            streams.append(RawStream(server.port, path))
        assert pump(streams, lambda: all(s.body for s in streams), 30), "streams did not open"
    except BaseException:
        for stream in streams:
            stream.close()
        raise
    return streams


def _final_retry(stream: RawStream) -> int:
    """The ``retry:`` value in the last block of a stream's body."""
    found = re.findall(rb"retry: (\d+)\n\n", stream.body[-120:])
    assert found, f"no retry at the end of {stream.body[-120:]!r}"
    return int(found[-1])


def _report(record_property: t.Callable[[str, object], None], name: str, value: float) -> None:
    record_property(name, round(value, 3))
    print(f"\n{name} = {value:.3f}")


@pytest.mark.slow
def test_sigterm_ends_200_streams_at_once(
    record_property: t.Callable[[str, object], None],
) -> None:
    """Every client gets a final comment, a spread-out retry and a terminated body;
    gunicorn exits long before its graceful timeout."""
    config = environment(SSE_PUSH_KEEPALIVE=5.0)
    with gunicorn(APP, env=config, extra_args=("--graceful-timeout", "30")) as server:
        streams = _open(server, 200)
        try:
            assert _stats(server)["live"] == 200
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            pump(streams, lambda: all(s.done for s in streams), 25)
            server.process.wait(40)
            elapsed = time.monotonic() - started
        finally:
            for stream in streams:
                stream.close()
        output = server.output()
    _report(record_property, "shutdown_seconds_200_streams", elapsed)
    assert elapsed < 5, output[-2000:]
    assert all(stream.terminated for stream in streams)
    assert all(b": closed: server shutting down\n" in stream.body for stream in streams)
    retries = [_final_retry(stream) for stream in streams]
    assert all(1000 <= retry <= 3000 for retry in retries)
    assert len(set(retries)) > 50, "retries are not spread out"
    assert "graceful timeout" not in output.lower()
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.slow
def test_quick_shutdown_also_ends_streams_cleanly() -> None:
    """On QUIT gunicorn's worker exits after 0.1 s; the chained handler gets every
    stream its final chunk before that."""
    with gunicorn(APP, env=environment(SSE_PUSH_KEEPALIVE=5.0)) as server:
        streams = _open(server, 20)
        try:
            server.process.send_signal(signal.SIGQUIT)
            pump(streams, lambda: all(s.done for s in streams), 15)
            server.process.wait(30)
        finally:
            for stream in streams:
                stream.close()
    assert all(stream.terminated for stream in streams)
    assert all(1000 <= _final_retry(stream) <= 3000 for stream in streams)


@pytest.mark.slow
def test_hup_reload_hands_clients_to_the_new_worker() -> None:
    """On HUP the old worker lets its streams go cleanly; the reconnect is served
    by the new worker."""
    config = environment(SSE_PUSH_KEEPALIVE=5.0, SSE_PUSH_RETRY=200)
    with gunicorn(APP, env=config, extra_args=("--graceful-timeout", "30")) as server:
        old_pid = _stats(server)["pid"]
        streams = _open(server, 5)
        try:
            server.process.send_signal(signal.SIGHUP)
            assert pump(streams, lambda: all(s.done for s in streams), 15)
        finally:
            for stream in streams:
                stream.close()
        assert all(stream.terminated for stream in streams)
        assert all(200 <= _final_retry(stream) <= 600 for stream in streams)
        wait_for(lambda: _stats(server)["pid"] != old_pid, 15, 0.05)
        (again,) = _open(server, 1)
        again.close()


def _latencies(streams: list[RawStream], server: Gunicorn) -> list[float]:
    """Publish 80 timestamped events; return every reader's delivery delays."""
    marks = [stream.event_count for stream in streams]
    count = 80
    outcome: list[bool] = []

    def read() -> None:
        targets = [mark + count for mark in marks]
        pairs = list(zip(streams, targets, strict=True))
        outcome.append(pump(streams, lambda: all(s.event_count >= n for s, n in pairs), 60))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(count):
                data = json.dumps({"t": time.time(), "pad": "x" * 2000})
                reply = client.post(f"{server.url}/publish", json={"channel": "fast", "data": data})
                reply.raise_for_status()
                time.sleep(0.01)
    finally:
        reader.join(90)
    assert outcome == [True], "the readers did not get every event"
    delays = []
    for stream, mark in zip(streams, marks, strict=True):
        for item in stream.events[mark : mark + count]:
            delays.append(item.at - json.loads(item.data)["t"])
    return delays


@pytest.mark.slow
def test_a_reader_that_never_reads_delays_no_one(
    record_property: t.Callable[[str, object], None],
) -> None:
    """100 fast readers see the same latency with and without a stalled reader.

    The stalled one also listens to a flooded channel, so the server's write to
    it hangs; its queue then overflows (it is unsubscribed at once) and the send
    timeout cuts its connection."""
    config = environment(SSE_PUSH_KEEPALIVE=5.0, SSE_PUSH_QUEUE_SIZE=32, SSE_PUSH_SEND_TIMEOUT=2.0)
    with gunicorn(APP, env=config) as server:
        fast = _open(server, 100, "/events?channel=fast")
        slow: RawStream | None = None
        try:
            baseline = statistics.median(_latencies(fast, server))
            slow = RawStream(server.port, "/events?channel=fast&channel=flood", rcvbuf=2048)
            wait_for(lambda: _stats(server)["live"] == 101, 10, 0.05)
            _publish(server, "x" * 65536, channel="flood", count=40)
            flooded = time.monotonic()
            loaded = statistics.median(_latencies(fast, server))
            unsubscribed = _stats(server)["subscribers"]
            wait_for(lambda: _stats(server)["live"] == 100, 20, 0.05)
            cut_after = time.monotonic() - flooded
        finally:
            for stream in fast:
                stream.close()
            if slow is not None:
                slow.close()
        output = server.output()
    _report(record_property, "fast_reader_median_latency_baseline_s", baseline)
    _report(record_property, "fast_reader_median_latency_with_stalled_reader_s", loaded)
    _report(record_property, "stalled_reader_cut_after_flood_s", cut_after)
    assert unsubscribed == 100, "the stalled reader's queue did not overflow"
    assert cut_after < 7, "not cut by the send timeout (2 s) but by TCP_USER_TIMEOUT (7 s)"
    # Generous on purpose: the box is shared; a blocked fan-out would multiply it.
    assert loaded <= 3 * baseline + 0.05
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.slow
def test_stalled_reader_is_released_by_the_send_timeout(
    record_property: t.Callable[[str, object], None],
) -> None:
    """A client that stops reading (its window shut) is cut once a write has hung
    for SSE_PUSH_SEND_TIMEOUT, with no overflow to end it first."""
    config = environment(
        SSE_PUSH_KEEPALIVE=5.0, SSE_PUSH_QUEUE_SIZE=100000, SSE_PUSH_SEND_TIMEOUT=2.0
    )
    with gunicorn(APP, env=config) as server:
        stalled = RawStream(server.port, "/events?channel=big", rcvbuf=2048)
        try:
            wait_for(lambda: _stats(server)["live"] == 1, 10, 0.05)
            _publish(server, "x" * 65536, channel="big", count=80)
            published = time.monotonic()
            wait_for(lambda: _stats(server)["live"] == 0, 20, 0.05)
            released = time.monotonic() - published
            assert _stats(server)["subscribers"] == 0
        finally:
            stalled.close()
        output = server.output()
    _report(record_property, "stalled_reader_released_after_s", released)
    # Sooner than TCP_USER_TIMEOUT (keepalive + send timeout = 7 s), so it was the
    # monitor's clean cut, not the kernel's abort.
    assert released < 7
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.slow
def test_peer_that_vanishes_without_fin_is_released(
    record_property: t.Callable[[str, object], None],
) -> None:
    """Half-open TCP: in a private network namespace the loopback goes down under
    an open stream, so no FIN or RST ever comes. The stream is released within
    keepalive + send timeout (plus one monitor tick)."""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("ip") is None:
        missing("unshare and ip (util-linux, iproute2)")
    keepalive, send_timeout = 1.0, 2.0
    env = {
        **os.environ,
        **environment(SSE_PUSH_KEEPALIVE=keepalive, SSE_PUSH_SEND_TIMEOUT=send_timeout),
    }
    # Root needs no user namespace; anyone else maps themselves to root in one.
    namespace = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--net", "--map-root-user"]
    try:
        result = subprocess.run(
            [*namespace, sys.executable, "-m", "tests.support.netns_probe"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the probe hung: {exc.stdout!r} {exc.stderr!r}") from None
    if result.returncode == 2 or b"unshare failed" in result.stderr:
        missing(f"network namespaces: {result.stderr.decode(errors='replace')[-300:]}")
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    _report(record_property, "vanished_peer_released_after_s", report["released_after"])
    assert report["sockopts"]["TCP_USER_TIMEOUT"] == 3000
    assert report["released_after"] <= keepalive + send_timeout + 2.0
    # Whether the monitor saw the unacknowledged data first or the kernel's
    # TCP_USER_TIMEOUT did (an error the hang-up watch reports), it is the same reason.
    assert report["disconnects"] == {"peer gone": 1}, report["disconnects"]
    assert "Traceback" not in report["log"], report["log"]


@pytest.mark.slow
def test_lifetime_ends_streams_and_the_client_resumes_without_loss() -> None:
    """A client that honours retry and Last-Event-ID across many lifetime ends
    receives every event exactly once, in order."""
    config = environment(SSE_PUSH_KEEPALIVE=5.0, SSE_PUSH_MAX_LIFETIME=0.4, SSE_PUSH_RETRY=50)
    with gunicorn(APP, env=config) as server:
        published: list[str] = []
        received: list[str] = []
        endings: list[bytes] = []
        connected = threading.Event()
        publishing_done = threading.Event()

        def publish() -> None:
            deadline = time.monotonic() + 2.5
            n = 0
            with httpx.Client(timeout=10) as client:
                while time.monotonic() < deadline:
                    reply = client.post(f"{server.url}/publish", json={"data": f"event {n}"})
                    published.extend(reply.raise_for_status().json()["ids"])
                    n += 1
                    time.sleep(0.01)
            publishing_done.set()

        publisher = threading.Thread(target=publish)
        connections = 0
        last_id: str | None = None
        retry = 0
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < deadline:
                headers = {"Last-Event-ID": last_id} if last_id else {}
                with connect_sse(client, "GET", f"{server.url}/events", headers=headers) as src:
                    connections += 1
                    if not connected.is_set():
                        connected.set()
                        publisher.start()
                    last_block = b""
                    for sse in src.iter_sse():
                        if sse.retry is not None:
                            retry = sse.retry
                            last_block = b"retry"
                        if sse.data:
                            received.append(sse.id)
                        if sse.id:
                            last_id = sse.id
                    endings.append(last_block)
                if publishing_done.is_set() and len(received) >= len(published):
                    break
                time.sleep(retry / 1000)
        publisher.join(10)
    assert received == published
    assert len(published) > 50
    assert connections >= 4
    assert all(ending == b"retry" for ending in endings)
    assert STOP_ID not in received


def test_limit_above_worker_connections_is_warned_about() -> None:
    """gunicorn would stop accepting before the limit is reached, so clients would
    hang instead of being told to retry."""
    config = environment(SSE_PUSH_MAX_CONNECTIONS=3)
    with gunicorn(APP, env=config, extra_args=("--worker-connections", "2")) as server:
        wait_for(lambda: "Booting worker" in server.output(), 10, 0.05)
        wait_for(lambda: "worker_connections" in server.output(), 10, 0.05)
        output = server.output()
    assert "SSE_PUSH_MAX_CONNECTIONS is 3, but gunicorn's gevent worker" in output
    assert "can hold only 1 streams" in output
    assert "raise gunicorn's worker_connections (--worker-connections)" in output


@pytest.mark.slow
def test_capacity_and_socket_options() -> None:
    """At SSE_PUSH_MAX_CONNECTIONS the next client gets 200 + retry + end; stream
    sockets carry TCP keepalive and TCP_USER_TIMEOUT."""
    config = environment(
        SSE_PUSH_KEEPALIVE=7.0, SSE_PUSH_SEND_TIMEOUT=9.0, SSE_PUSH_MAX_CONNECTIONS=2
    )
    with gunicorn(APP, env=config) as server:
        streams = _open(server, 2)
        try:
            stats = _stats(server)
            refused = RawStream(server.port, "/events?channel=room")
            streams.append(refused)
            assert pump([refused], lambda: refused.done, 10)
        finally:
            for stream in streams:
                stream.close()
    assert refused.status == 200 and refused.terminated
    assert b": unavailable: at capacity\n" in refused.body and _final_retry(refused) >= 1000
    assert stats["live"] == 2 and len(stats["sockopts"]) == 2
    for options in stats["sockopts"]:
        assert options["SO_KEEPALIVE"] == 1
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            assert options["TCP_KEEPIDLE"] == 7
            assert options["TCP_KEEPINTVL"] == 3
            assert options["TCP_KEEPCNT"] == 3
            assert options["TCP_USER_TIMEOUT"] == 16000
