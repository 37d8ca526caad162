"""The same stream semantics on every server, each a real server on 127.0.0.1.

Servers: this package's gunicorn worker class (``-k
flask_sse_push.servers.gunicorn.GeventWorker``, the fast path), gunicorn's own
``-k gevent``, ``-k gthread --threads 8``, ``-k sync``, waitress (4 threads by
default) and ``flask run``. Each section names the rule its tests hold every server to.
"""

from __future__ import annotations

import contextlib
import re
import select
import signal
import time
import typing as t
import zlib

import httpx
import pytest

from tests.apps.lifecycle_app import GZIP_VARIABLE, LOG_VARIABLE, environment
from tests.support import wire
from tests.support.raw_client import RawStream, opened, pump, wait_for
from tests.support.servers import Gunicorn, flask_run, gunicorn, stop, waitress

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.lifecycle_app:create_app()"

#: Every server family, by the name the tests use.
KINDS = ("gevent-worker", "gevent", "gthread", "sync", "waitress", "flask-run")


@contextlib.contextmanager
def serve(
    kind: str, env: Mapping[str, str], extra_args: tuple[str, ...] = ()
) -> Iterator[Gunicorn]:
    """Run the lifecycle app on the server ``kind`` for the ``with`` block."""
    if kind == "gevent-worker":
        with gunicorn(APP, env=env, extra_args=extra_args) as server:
            yield server
    elif kind in ("gevent", "sync"):
        with gunicorn(APP, env=env, extra_args=extra_args, worker=kind) as server:
            yield server
    elif kind == "gthread":
        args = ("--threads", "8", *extra_args)
        with gunicorn(APP, env=env, extra_args=args, worker="gthread") as server:
            yield server
    elif kind == "waitress":
        with waitress(
            "tests.apps.lifecycle_app:create_app", env=env, extra_args=extra_args
        ) as server:
            yield server
    elif kind == "flask-run":
        with flask_run(APP, env=env, extra_args=extra_args) as server:
            yield server
    else:
        raise AssertionError(kind)


def _stats(server: Gunicorn) -> dict[str, t.Any]:
    reply = httpx.get(f"{server.url}/stats", timeout=10)
    reply.raise_for_status()
    result: dict[str, t.Any] = reply.json()
    return result


def _publish(server: Gunicorn, channel: str, events: list[dict[str, t.Any]]) -> list[str]:
    reply = httpx.post(
        f"{server.url}/publish", json={"channel": channel, "events": events}, timeout=30
    )
    reply.raise_for_status()
    ids: list[str] = reply.json()["ids"]
    return ids


def _report(record_property: Callable[[str, object], None], name: str, value: float) -> None:
    record_property(name, round(value, 3))
    print(f"\n{name} = {value:.3f}")


# -- 1. a compressing middleware gets every byte -------------------------------


def _gunzip(body: bytes) -> str:
    """Decompress what has arrived of a gzip stream; fail if it is not gzip."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body).decode()


@pytest.mark.parametrize("kind", ["gevent-worker", "gevent"])
def test_a_gzip_middleware_flushing_per_chunk_gets_a_valid_stream(kind: str) -> None:
    """Without this rule: direct writes went past the middleware, so the body was a gzip
    header followed by raw event bytes, and decompression failed."""
    env = {**environment(SSE_PUSH_KEEPALIVE=5.0), GZIP_VARIABLE: "1"}
    with serve(kind, env) as server:
        stream = opened(server, "/events?channel=gz", headers={"Accept-Encoding": "gzip"})
        try:
            time.sleep(0.1)  # the stream waits for events: where direct writes happen
            events = [{"data": f"event {n}\nline two"} for n in range(5)]
            ids = _publish(server, "gz", events[:3]) + _publish(server, "gz", events[3:])
            last = f"id: {ids[-1]}\n"
            assert pump([stream], lambda: last in _gunzip(stream.body), 10)
            assert stream.headers.get("content-encoding") == "gzip"
            parsed = wire.parse(_gunzip(stream.body).encode()).events
            assert [(p.data, p.last_event_id) for p in parsed] == [
                (e["data"], i) for e, i in zip(events, ids, strict=True)
            ]
        finally:
            stream.close()


# -- 2. the access log counts every body byte -----------------------------------


@pytest.mark.parametrize("kind", ["gevent-worker", "gevent"])
def test_the_access_log_reports_the_real_body_size(kind: str) -> None:
    """Without this rule: a client received 100,244 body bytes and ``%(B)s`` said 58."""
    args = ("--access-logformat", "%(r)s B=%(B)s")
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=5.0), args) as server:
        stream = opened(server, "/events?channel=log")
        time.sleep(0.1)
        ids: list[str] = []
        for _ in range(5):
            ids += _publish(server, "log", [{"data": "x" * 20_000}])
            time.sleep(0.02)
        last = f"id: {ids[-1]}\n".encode()
        assert pump([stream], lambda: last in stream.body, 10)
        received = len(stream.body)
        stream.close()
        line = re.compile(r"GET /events\?channel=log HTTP/1\.1 B=(\d+)")
        wait_for(lambda: line.search(server.output()) is not None, 10)
        found = line.search(server.output())
        assert found is not None
        assert int(found.group(1)) == received


# -- 3. the send timeout measures a lack of progress ---------------------------


def _unchunk(raw: bytes) -> bytes:
    """Decode an HTTP/1.1 chunked body; fail on anything malformed."""
    body = bytearray()
    view = memoryview(raw)
    at = 0
    while at < len(raw):
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end], 16)
        body += view[end + 2 : end + 2 + size]
        assert raw[end + 2 + size : end + 4 + size] == b"\r\n", "chunk not followed by CRLF"
        at = end + 4 + size
    return bytes(body)


def _read_steadily(stream: RawStream, rate: float, until: bytes, timeout: float) -> bytes | None:
    """Read the rest of a chunked body at about ``rate`` bytes/s until it holds ``until``.

    :returns: the chunked bytes read, or ``None`` if the server ended the
        response (or ``timeout`` passed) first.
    """
    raw = bytearray()
    started = time.monotonic()
    stream.sock.setblocking(False)
    while until not in raw[-len(until) - 65536 :]:
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            return None
        if len(raw) > rate * elapsed:
            time.sleep(0.005)
            continue
        readable, _, _ = select.select([stream.sock], [], [], 0.1)
        if readable:
            try:
                data = stream.sock.recv(16384)
            except BlockingIOError:
                continue
            except OSError:
                return None
            if not data:
                return None
            raw += data
    return bytes(raw)


@pytest.mark.parametrize("kind", ["gevent-worker", "gthread"])
def test_a_slow_but_steady_reader_is_not_cut_and_a_stalled_one_is(
    kind: str, record_property: Callable[[str, object], None]
) -> None:
    """Without this rule: with a 3 s send timeout, a client reading a 12 MB event at about
    1 MB/s was cut after about 6 s, every time it came back."""
    config = environment(SSE_PUSH_KEEPALIVE=30.0, SSE_PUSH_SEND_TIMEOUT=3.0)
    with serve(kind, config) as server:
        steady = opened(server, "/events?channel=big", rcvbuf=65536)
        stalled = opened(server, "/events?channel=stuck", rcvbuf=65536)
        try:
            time.sleep(0.1)
            big = "x" * 12_000_000
            (event_id,) = _publish(server, "big", [{"data": big}])
            started = time.monotonic()
            raw = _read_steadily(steady, 1_000_000, b"x" * 100 + b"\n\n\r\n", 60)
            took = time.monotonic() - started
            _report(record_property, f"steady_12MB_read_s_{kind}", took)
            assert raw is not None, f"the steady reader was cut after {took:.1f} s"
            assert took > 8, "the reader was not slow: nothing was tested"
            assert _unchunk(raw).endswith(f"id: {event_id}\ndata: {big}\n\n".encode())
            stats = _stats(server)
            assert stats["live"] == 2 and "send_timeout" not in stats["disconnects"]

            _publish(server, "stuck", [{"data": big}])
            cut_after = wait_for(
                lambda: _stats(server)["disconnects"].get("send_timeout") == 1, 15, 0.1
            )
            _report(record_property, f"stalled_reader_cut_after_s_{kind}", cut_after)
            assert _stats(server)["live"] == 1, "only the stalled reader may be cut"
        finally:
            steady.close()
            stalled.close()


# -- 4. a blocked application source is closed when its client leaves ----------


@pytest.mark.parametrize("kind", ["gevent-worker", "gevent"])
@pytest.mark.parametrize("source", ["sleep", "queue"])
def test_a_blocked_source_is_closed_within_a_second_of_its_client_leaving(
    kind: str, source: str, record_property: Callable[[str, object], None]
) -> None:
    """Without this rule: a source sleeping 60 s between items was not closed within 15 s
    of its client leaving; one blocked on a queue never was."""
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=15.0)) as server:
        stream = RawStream(server.port, f"/source?kind={source}")
        assert pump([stream], lambda: stream.event_count >= 1, 10)
        stream.close()
        left = time.time()
        wait_for(lambda: bool(_stats(server)["sources_closed"]), 5)
        closed_after = _stats(server)["sources_closed"][0] - left
        _report(record_property, f"source_closed_after_s_{kind}_{source}", closed_after)
        assert closed_after < 1.5


# -- 5. a client that closes is released at once -------------------------------


@pytest.mark.parametrize("kind", ["gevent-worker", "gevent", "gthread", "flask-run", "waitress"])
def test_a_client_that_closes_is_released_within_a_second(
    kind: str, record_property: Callable[[str, object], None]
) -> None:
    """Without this rule: a closed tab was noticed at the next keepalive (15 s by default)."""
    args = ("--channel-request-lookahead=1",) if kind == "waitress" else ()
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=15.0), args) as server:
        stream = opened(server, "/events?channel=tab")
        assert _stats(server)["live"] == 1
        stream.close()
        released_after = wait_for(lambda: _stats(server)["live"] == 0, 5)
        _report(record_property, f"closed_client_released_after_s_{kind}", released_after)
        assert released_after < 1.5
        assert _stats(server)["disconnects"] == {"client": 1}


# -- 6. every disconnect is counted under its real reason ----------------------


@pytest.mark.parametrize("kind", ["gevent-worker", "gthread"])
def test_each_disconnect_is_counted_under_its_reason(kind: str) -> None:
    """Without this rule: send-timeout cuts, and a stalled client that overflowed its
    queue, were counted as ``client``."""
    config = {
        **environment(SSE_PUSH_KEEPALIVE=5.0, SSE_PUSH_SEND_TIMEOUT=1.0, SSE_PUSH_QUEUE_SIZE=5),
        LOG_VARIABLE: "1",
    }
    big = {"data": "x" * 8_000_000}
    with serve(kind, config) as server:
        leaving = opened(server, "/events?channel=tab")
        timed_out = opened(server, "/events?channel=st", rcvbuf=4096)
        overflowing = opened(server, "/events?channel=of", rcvbuf=4096)
        revoked = opened(server, "/events?channel=rv")
        try:
            time.sleep(0.1)
            leaving.close()
            _publish(server, "st", [big])
            _publish(server, "of", [big])
            time.sleep(0.2)  # its write is blocked now: what follows queues up
            _publish(server, "of", [{"data": f"small {n}"} for n in range(10)])
            httpx.post(f"{server.url}/revoke", json={"channel": "rv"}, timeout=10)
            expected = {"client": 1, "send_timeout": 1, "overflow": 1, "revoked": 1}
            wait_for(lambda: _stats(server)["disconnects"] == expected, 15, 0.1)
            last = opened(server, "/events?channel=down")
            stop(server.process)
            assert "reason=shutdown" in server.output()
            last.close()
        finally:
            for stream in (leaving, timed_out, overflowing, revoked):
                stream.close()


def test_a_stream_that_reaches_its_lifetime_is_counted_as_lifetime() -> None:
    with serve("gevent-worker", environment(SSE_PUSH_MAX_LIFETIME=1.0)) as server:
        stream = opened(server, "/events?channel=life")
        assert pump([stream], lambda: stream.done, 5)
        wait_for(lambda: _stats(server)["disconnects"] == {"lifetime": 1}, 5)
        stream.close()


# -- 7. the default capacity comes from the server -----------------------------


def _open_many(server: Gunicorn, count: int) -> list[RawStream]:
    streams = [RawStream(server.port, "/events?channel=full") for _ in range(count)]
    assert pump(streams, lambda: all(s.body for s in streams), 20), "no answer to some streams"
    return streams


def _transient(stream: RawStream) -> bool:
    """Whether ``stream`` got the transient answer: 200, ``retry:``, end."""
    return stream.status == 200 and b"unavailable: at capacity" in stream.body


@pytest.mark.parametrize("kind", ["gevent-worker", "gevent"])
def test_gevent_capacity_is_worker_connections_less_headroom(kind: str) -> None:
    """Without this rule: with ``--worker-connections 100`` and no SSE_PUSH_MAX_CONNECTIONS,
    client 101 onwards and ``/events/health`` got no answer at all."""
    args = ("--worker-connections", "20")
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=5.0), args) as server:
        streams = _open_many(server, 22)
        try:
            assert pump(streams, lambda: sum(s.done for s in streams) >= 4, 10)
            assert sum(_transient(s) for s in streams) == 4
            assert all(re.search(rb"retry: \d+\n\n$", s.body) for s in streams if s.done)
            assert _stats(server)["capacity"] == 18
            health = httpx.get(f"{server.url}/events/health", timeout=3)
            assert health.status_code == 200 and health.json()["clients_connected"] == 18
        finally:
            for stream in streams:
                stream.close()


# -- 8. threaded servers keep threads for ordinary requests --------------------


@pytest.mark.parametrize(
    ("kind", "threads", "capacity"),
    [("gthread", 8, 6), ("sync", 1, 0), ("waitress", 4, 3), ("flask-run", 8, None)],
)
def test_threaded_servers_keep_answering_and_warn(
    kind: str, threads: int, capacity: int | None
) -> None:
    """Without this rule: under ``gthread --threads 8`` eight streams took every thread and a
    POST waited 13 s; under ``sync`` one stream got the worker killed; waitress
    froze the same way. Nothing warned."""
    args = ("--timeout", "5") if kind == "sync" else ()
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=5.0), args) as server:
        streams = _open_many(server, threads)
        try:
            refused = 0 if capacity is None else max(0, threads - capacity)
            assert pump(streams, lambda: sum(s.done for s in streams) >= refused, 10)
            for stream in streams:
                if stream.done:  # as a browser does when a response ends: gunicorn
                    stream.close()  # waits up to 2 s for that before it moves on
            started = time.monotonic()
            reply = httpx.post(
                f"{server.url}/publish", json={"channel": "other", "data": "x"}, timeout=5
            )
            assert reply.status_code == 200
            assert time.monotonic() - started < 2
            stats = _stats(server)
            assert stats["capacity"] == capacity
            expected_live = threads if capacity is None else min(capacity, threads)
            assert stats["live"] == expected_live
            assert sum(_transient(s) for s in streams) == threads - expected_live
            if kind == "sync":
                time.sleep(6)  # past gunicorn's --timeout: the worker must be alive
                assert "WORKER TIMEOUT" not in server.output()
                assert _stats(server)["pid"] == stats["pid"]
            output = server.output()
            assert "every open stream holds one thread" in output
            assert "flask_sse_push.servers.gunicorn.GeventWorker" in output
        finally:
            for stream in streams:
                stream.close()


def test_gevent_servers_do_not_warn() -> None:
    with serve("gevent-worker", environment()) as server:
        _stats(server)
        stop(server.process, signal.SIGTERM)
        assert "every open stream holds one thread" not in server.output()
