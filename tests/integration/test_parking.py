"""Parked streams on a real gunicorn with the package's worker class.

Under ``-k flask_sse_push.servers.gunicorn.GeventWorker`` a broker-backed
stream that has nothing to send keeps no greenlet: the worker holds it in its
parking table (``flask_sse_push.servers.parking``) until it ends. These tests
drive such streams from raw sockets on 127.0.0.1 through every way a stream
lives and ends: a slow reader that wakes a stream and lets it park again,
keepalives and lifetime ends from the table's timers, a hang-up, a revoke, a
shutdown of 10,000 parked streams, and the access-log line written when a
parked stream ends. Bodies are checked with the WHATWG parser of
``tests.support.wire``, which is independent of the package; that the streams
are parked is read from ``GET /stats`` (``parked``: ``clients_parked``).
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import resource
import selectors
import signal
import threading
import time
import typing as t
import uuid

import httpx
import pytest

from flask_sse_push.stream import STOP_ID
from tests.apps.lifecycle_app import environment
from tests.support import wire
from tests.support.raw_client import RawStream, opened, pump, wait_for
from tests.support.servers import Gunicorn, gunicorn, missing

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.servers import RedisServer

pytestmark = pytest.mark.integration

APP = "tests.apps.lifecycle_app:create_app()"

#: The brokers a stream can park on: the in-process one and a real redis-server.
BROKERS = ("memory", "redis")


def _stats(server: Gunicorn) -> dict[str, t.Any]:
    reply = httpx.get(f"{server.url}/stats", timeout=20)
    reply.raise_for_status()
    result: dict[str, t.Any] = reply.json()
    return result


def _publish(server: Gunicorn, channel: str, data: list[str]) -> list[str]:
    """Publish one event per item of ``data`` to ``channel``; return their ids."""
    events = [{"data": item} for item in data]
    reply = httpx.post(
        f"{server.url}/publish", json={"channel": channel, "events": events}, timeout=30
    )
    reply.raise_for_status()
    ids: list[str] = reply.json()["ids"]
    return ids


def _revoke(server: Gunicorn, channel: str, *, reconnect: bool = False) -> int:
    reply = httpx.post(
        f"{server.url}/revoke", json={"channel": channel, "reconnect": reconnect}, timeout=10
    )
    reply.raise_for_status()
    ended: int = reply.json()["ended"]
    return ended


def _parked(server: Gunicorn) -> int:
    parked: int = _stats(server)["parked"]
    return parked


def _wait_parked(server: Gunicorn, count: int, timeout: float = 10.0) -> None:
    seen: list[int] = []

    def reached() -> bool:
        seen.append(_parked(server))
        return seen[-1] == count

    try:
        wait_for(reached, timeout, step=0.05)
    except AssertionError:
        raise AssertionError(f"parked never reached {count}: last seen {seen[-5:]}") from None


def _channel(name: str) -> str:
    """A channel name of its own, so tests sharing a redis-server keep apart."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _config(broker: str, request: pytest.FixtureRequest, **config: object) -> dict[str, str]:
    """The app's environment for ``broker`` (``memory`` or ``redis``) and ``config``."""
    if broker == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        config["SSE_PUSH_BROKER_URL"] = redis_server.url
    return environment(**config)


@contextlib.contextmanager
def _closing(streams: list[RawStream]) -> Iterator[list[RawStream]]:
    """Close every stream of ``streams`` (as it is at the end) when the block ends."""
    try:
        yield streams
    finally:
        for stream in streams:
            stream.close()


def _events(stream: RawStream) -> list[tuple[str, str]]:
    """The (data, last event id) of each event of the stream's body, parsed per WHATWG."""
    return [(event.data, event.last_event_id) for event in wire.parse(stream.body).events]


def _keepalives(body: bytes) -> int:
    """Keepalive comments in ``body`` (not the first chunk's ``: keepalive <ms>``)."""
    return [comment.strip() for comment in wire.parse(body).comments].count("keepalive")


def _last_comment(body: bytes) -> str:
    """The text of the body's last comment line (``: closed: ...`` for an ended stream)."""
    return wire.parse(body).comments[-1].strip()


#: The access-log format: path, query, status, body bytes, duration (microseconds).
ACCESS_FORMAT = "%(U)s %(q)s %(s)s %(B)s %(D)s"


def _log_lines(path: str, channel: str) -> list[tuple[int, int, float]]:
    """(status, bytes, seconds) of each access-log line of a stream of ``channel``."""
    found = []
    with open(path, encoding="utf-8") as log:
        for line in log:
            fields = line.split()
            if len(fields) == 5 and fields[0] == "/events" and fields[1] == f"channel={channel}":
                found.append((int(fields[2]), int(fields[3]), int(fields[4]) / 1e6))
    return found


# -- 1. a stream that parks, wakes for a slow reader, and parks again -----------


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
def test_a_stream_wakes_for_a_slow_reader_and_parks_again(
    broker: str, request: pytest.FixtureRequest
) -> None:
    """N streams park. One client with a small receive buffer stops reading, and
    more is published to it than the socket buffers hold: only that stream
    wakes (``parked`` is N-1) while the others stay parked and get their events.
    Then it reads, steadily but for longer than the send timeout: every byte
    parses to exactly what was published, in order; it is not cut (progress
    is what the send timeout measures), and it parks again (``parked`` is N)."""
    others, slow_channel = _channel("room"), _channel("slow")
    send_timeout = 5.0
    config = _config(broker, request, SSE_PUSH_KEEPALIVE=30.0, SSE_PUSH_SEND_TIMEOUT=send_timeout)
    with gunicorn(APP, env=config) as server, _closing([]) as streams:
        streams += [opened(server, f"/events?channel={others}") for _ in range(5)]
        slow = opened(server, f"/events?channel={slow_channel}", rcvbuf=4096)
        streams.append(slow)
        count = len(streams)
        _wait_parked(server, count)

        # 30 events of 256 KiB: far more than the kernel buffers of a client
        # that advertises a few KiB of window.
        big = [f"{n:03d}:" + chr(ord("a") + n % 26) * (256 * 1024) for n in range(30)]
        big_ids = _publish(server, slow_channel, big)
        stalled = time.monotonic()
        _wait_parked(server, count - 1)  # the slow one is awake, finishing its write

        small = [f"small {n}" for n in range(3)]
        small_ids = _publish(server, others, small)
        readers = streams[:-1]
        assert pump(readers, lambda: all(s.event_count == 3 for s in readers), 10)
        for stream in readers:
            assert _events(stream) == list(zip(small, small_ids, strict=True))
        stats = _stats(server)
        assert stats["parked"] == count - 1, "the others must park again; the slow one is awake"
        assert time.monotonic() - stalled < send_timeout, "the stall outlasted the send timeout"

        # Read steadily, about 1.2 MiB/s: the whole read lasts longer than the
        # send timeout, while each piece goes through quickly.
        total = sum(len(data) for data in big)
        started = time.monotonic()
        with selectors.DefaultSelector() as selector:
            selector.register(slow.sock, selectors.EVENT_READ)
            deadline = started + 60
            while slow.event_count < len(big) and not slow.eof and time.monotonic() < deadline:
                if slow.wire_bytes > (time.monotonic() - started) * 1.2 * 2**20:
                    time.sleep(0.01)
                    continue
                if selector.select(0.2):
                    slow.read()
        read_for = time.monotonic() - started
        assert not slow.eof, "the slow reader was cut"
        assert _events(slow) == list(zip(big, big_ids, strict=True))
        assert len(slow.body) > total
        assert read_for > send_timeout, "the read should outlast the send timeout"

        _wait_parked(server, count)
        # Parked again, it gets events written directly like the others.
        (after_id,) = _publish(server, slow_channel, ["after"])
        assert pump([slow], lambda: slow.event_count == len(big) + 1, 10)
        assert _events(slow)[-1] == ("after", after_id)
        _wait_parked(server, count)
        stats = _stats(server)
    assert stats["live"] == count
    assert "send_timeout" not in stats["disconnects"], stats["disconnects"]
    assert "Traceback" not in server.output(), server.output()[-3000:]


@pytest.mark.slow
def test_a_stream_awake_for_a_slow_reader_ends_cleanly() -> None:
    """Streams woken to finish a large write end like parked ones: a client that
    hangs up meanwhile is released at once (a ``client`` disconnect); a revoke
    lets the write finish, then sends the stop chunk after every event; on
    SIGTERM the parked streams get their last chunk at once while a stalled
    one is cut, and gunicorn exits well within its graceful timeout."""
    quiet, gone, revoked_channel, stalled_channel = (
        _channel(name) for name in ("quiet", "gone", "revoked", "stalled")
    )
    config = environment(SSE_PUSH_KEEPALIVE=30.0, SSE_PUSH_SEND_TIMEOUT=10.0)
    graceful = 20
    extra = ("--graceful-timeout", str(graceful))
    with gunicorn(APP, env=config, extra_args=extra) as server, _closing([]) as streams:
        others = [opened(server, f"/events?channel={quiet}") for _ in range(2)]
        streams += others
        slow = {
            name: opened(server, f"/events?channel={name}", rcvbuf=4096)
            for name in (gone, revoked_channel, stalled_channel)
        }
        streams += slow.values()
        _wait_parked(server, 5)
        big = {name: [f"{name} {n} " + "x" * 300_000 for n in range(10)] for name in slow}
        ids = {name: _publish(server, name, data) for name, data in big.items()}
        _wait_parked(server, 2)

        slow[gone].close()
        wait_for(lambda: _stats(server)["live"] == 4, 5)
        assert _stats(server)["disconnects"] == {"client": 1}

        assert _revoke(server, revoked_channel) == 1
        revoked = slow[revoked_channel]
        assert pump([revoked], lambda: revoked.eof, 20)
        assert _events(revoked) == list(
            zip(big[revoked_channel], ids[revoked_channel], strict=True)
        )
        assert wire.parse(revoked.body).last_event_id == STOP_ID
        assert _last_comment(revoked.body) == "closed: revoked"
        stats = _stats(server)
        assert (stats["live"], stats["parked"]) == (3, 2)

        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert pump(others, lambda: all(s.eof for s in others), 10)
        server.process.wait(graceful + 10)
        exited_after = time.monotonic() - started
        output = server.output()
        stalled = slow[stalled_channel]
        assert pump([stalled], lambda: stalled.eof, 10), "the stalled stream was never closed"
    assert exited_after < graceful / 2, output[-3000:]
    for stream in others:
        assert stream.terminated
        assert _last_comment(stream.body) == "closed: server shutting down"
    assert "Traceback" not in output, output[-3000:]


# -- 2. shutdown with 10,000 parked streams ----------------------------------------

#: Parked streams the shutdown test ends at once.
MANY = 10_000


@contextlib.contextmanager
def _open_files(needed: int) -> Iterator[None]:
    """Raise the soft limit of open files to the hard one for the block (child
    processes started meanwhile inherit it); skip if the hard one is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        missing(f"{needed} open files per process (the hard RLIMIT_NOFILE is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _open_many(server: Gunicorn, path: str, count: int, streams: list[RawStream]) -> None:
    """Open ``count`` streams into ``streams`` in batches, each batch read until every
    stream of it has its first chunk (the listen backlog is not flooded)."""
    batch_size = 500
    while len(streams) < count:
        batch = [RawStream(server.port, path) for _ in range(min(batch_size, count - len(streams)))]
        streams += batch
        assert _pump_open(batch), f"streams did not open ({len(streams)} so far)"


def _pump_open(batch: list[RawStream]) -> bool:
    return pump(batch, lambda: all(stream.body for stream in batch), 60)


@pytest.mark.slow
def test_sigterm_ends_10000_parked_streams() -> None:
    """One worker holds 10,000 parked streams. On SIGTERM every one of them gets
    the shutdown's last chunk (``: closed: server shutting down`` and a
    ``retry:``), the end of the chunked body and EOF; the retries are spread;
    the worker exits within the graceful timeout, closing none unfinished."""
    graceful = 30
    with _open_files(MANY + 500):
        config = environment(SSE_PUSH_KEEPALIVE=120.0)
        extra = ("--worker-connections", str(MANY + 500), "--graceful-timeout", str(graceful))
        with gunicorn(APP, env=config, extra_args=extra) as server, _closing([]) as streams:
            _open_many(server, "/events?channel=many", MANY, streams)
            _wait_parked(server, MANY, timeout=60)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            pump(streams, lambda: all(s.eof for s in streams), graceful + 10)
            server.process.wait(graceful + 10)
            exited_after = time.monotonic() - started
            output = server.output()
    print(f"\n{MANY} parked streams ended; gunicorn exited {exited_after:.2f} s after SIGTERM")
    assert exited_after < graceful, output[-3000:]
    unfinished = [s for s in streams if not (s.terminated and s.eof)]
    assert not unfinished, f"{len(unfinished)} streams not ended: {unfinished[0].body[-200:]!r}"
    retries = []
    for stream in streams:
        parsed = wire.parse(stream.body)
        assert _last_comment(stream.body) == "closed: server shutting down", stream.body[-200:]
        assert parsed.retry is not None
        assert stream.body.endswith(b"retry: %d\n\n" % parsed.retry), stream.body[-200:]
        retries.append(parsed.retry)
    assert all(1000 <= retry <= 3000 for retry in retries)
    assert len(set(retries)) > 500, "the retries are not spread out"
    assert "graceful timeout" not in output.lower(), output[-3000:]
    assert "Traceback" not in output, output[-3000:]


# -- 3. lifetime ends of parked streams ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
def test_parked_streams_end_with_their_lifetime(
    broker: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    """With a 2 s lifetime, parked streams end after 80-100 % of it (at random),
    with ``: closed: lifetime``, a ``retry:`` and their last event id; so does a
    stream that gets events meanwhile; each is counted as a ``lifetime`` end,
    and has its access-log line with its bytes and its duration."""
    lifetime = 2.0
    idle_channel, busy_channel = _channel("idle"), _channel("busy")
    config = _config(broker, request, SSE_PUSH_KEEPALIVE=30.0, SSE_PUSH_MAX_LIFETIME=lifetime)
    access_log = str(tmp_path / "access.log")
    extra = ("--access-logfile", access_log, "--access-logformat", ACCESS_FORMAT)
    with gunicorn(APP, env=config, extra_args=extra) as server, _closing([]) as streams:
        starts: list[float] = []
        for _ in range(8):
            starts.append(time.time())
            streams.append(RawStream(server.port, f"/events?channel={idle_channel}"))
        starts.append(time.time())
        busy = RawStream(server.port, f"/events?channel={busy_channel}")
        streams.append(busy)
        assert pump(streams, lambda: all(s.body for s in streams), 10)
        _wait_parked(server, len(streams), timeout=1.2)  # well before 80 % of the lifetime
        published: list[tuple[str, str]] = []
        for n in range(4):
            (event_id,) = _publish(server, busy_channel, [f"busy {n}"])
            published.append((f"busy {n}", event_id))
            time.sleep(0.2)
        assert pump(streams, lambda: all(s.done for s in streams), 10)
        wait_for(lambda: _stats(server)["disconnects"].get("lifetime") == len(streams), 5)
        stats = _stats(server)
    lives: list[float] = []
    since_first: list[float] = []
    for stream, start in zip(streams, starts, strict=True):
        assert stream.terminated, stream.body[-200:]
        parsed = wire.parse(stream.body)
        assert _last_comment(stream.body) == "closed: lifetime", stream.body[-200:]
        assert parsed.retry is not None and 1000 <= parsed.retry <= 3000
        ended = stream.received[-1]
        assert ended.retry == parsed.retry
        # The lifetime starts after the connect began and before the first
        # chunk (its id block) arrived.
        lives.append(ended.at - start)
        since_first.append(ended.at - stream.received[0].at)
        first_id = re.search(rb"^id: (.+)$", stream.body, re.MULTILINE)
        assert first_id is not None, "the first chunk gives the client a cursor"
        if stream is busy:
            assert _events(busy) == published
            assert parsed.last_event_id == published[-1][1]
        else:
            assert parsed.events == []
            assert parsed.last_event_id == first_id.group(1).decode()
    print("\nlifetimes:", " ".join(f"{life:.2f}" for life in lives))
    print("since the first chunk:", " ".join(f"{life:.2f}" for life in since_first))
    assert all(life >= 0.8 * lifetime for life in lives), lives
    # The upper bound allows for a slow, shared machine.
    assert all(life <= lifetime + 0.75 for life in since_first), since_first
    assert max(lives) - min(lives) > 0.02, f"no jitter: {lives}"
    assert stats["live"] == 0
    idle_lines = _log_lines(access_log, idle_channel)
    (busy_line,) = _log_lines(access_log, busy_channel)
    assert sorted(sent for _, sent, _ in idle_lines) == sorted(len(s.body) for s in streams[:-1])
    assert busy_line[1] == len(busy.body)
    for status, _, duration in [*idle_lines, busy_line]:
        assert status == 200
        assert 0.8 * lifetime - 0.1 <= duration <= lifetime + 1.0, duration


# -- 4. access-log lines of parked streams --------------------------------------------


@pytest.mark.slow
def test_a_parked_stream_s_access_log_line_is_written_when_it_ends(
    tmp_path: pathlib.Path,
) -> None:
    """Streams that park, get events and keepalives, and end in three ways (the
    client closes, a revoke, a shutdown) each get exactly one access-log line,
    written when the stream ends and not when it parks, with status 200, the
    body bytes the client received, and the stream's whole duration."""
    access_log = str(tmp_path / "access.log")
    config = environment(SSE_PUSH_KEEPALIVE=1.0)
    extra = ("--access-logfile", access_log, "--access-logformat", ACCESS_FORMAT)
    names = {way: _channel(way) for way in ("closes", "revoked", "shutdown")}
    with gunicorn(APP, env=config, extra_args=extra) as server, _closing([]) as streams:
        starts: dict[str, float] = {}
        by_way: dict[str, RawStream] = {}
        for way, channel in names.items():
            starts[way] = time.monotonic()
            by_way[way] = opened(server, f"/events?channel={channel}")
            streams.append(by_way[way])
        _wait_parked(server, 3)
        for channel in names.values():
            _publish(server, channel, ["one", "two" * 100])
        # Two keepalives each, after the events.
        assert pump(streams, lambda: all(_keepalives(s.body) >= 2 for s in streams), 10)
        assert all(s.event_count == 2 for s in streams)
        _wait_parked(server, 3)
        for channel in names.values():
            assert _log_lines(access_log, channel) == [], "a line was written when it parked"

        closing = by_way["closes"]
        closing.close()
        lives = {"closes": time.monotonic() - starts["closes"]}
        wait_for(lambda: bool(_log_lines(access_log, names["closes"])), 5)
        assert _log_lines(access_log, names["revoked"]) == []

        assert _revoke(server, names["revoked"]) == 1
        revoked = by_way["revoked"]
        assert pump([revoked], lambda: revoked.eof, 10)
        lives["revoked"] = time.monotonic() - starts["revoked"]
        wait_for(lambda: bool(_log_lines(access_log, names["revoked"])), 5)
        assert _log_lines(access_log, names["shutdown"]) == []

        server.process.send_signal(signal.SIGTERM)
        last = by_way["shutdown"]
        assert pump([last], lambda: last.eof, 15)
        lives["shutdown"] = time.monotonic() - starts["shutdown"]
        server.process.wait(15)
    assert wire.parse(revoked.body).last_event_id == STOP_ID
    assert _last_comment(last.body) == "closed: server shutting down"
    for way, channel in names.items():
        lines = _log_lines(access_log, channel)
        assert len(lines) == 1, f"{way}: {lines}"
        ((status, sent, duration),) = lines
        assert status == 200, way
        assert sent == len(by_way[way].body), (
            f"{way}: logged {sent}, received {len(by_way[way].body)}"
        )
        # The client's view starts before the connect and ends after the
        # last byte (or its own close, which the server notices within 1 s).
        assert lives[way] - 1.0 <= duration <= lives[way] + 2.0, (way, duration, lives[way])


@pytest.mark.slow
def test_gunicorn_s_post_request_hook_runs_when_the_stream_parks(tmp_path: pathlib.Path) -> None:
    """The worker's request is over once the stream parks: gunicorn's
    ``post_request`` hook runs then, once, while the stream goes on."""
    calls = tmp_path / "post_request.log"
    settings = tmp_path / "hooks.py"
    settings.write_text(
        "def post_request(worker, req, environ, resp):\n"
        f"    with open({str(calls)!r}, 'a') as out:\n"
        "        out.write(req.path + ' ' + req.query + '\\n')\n"
    )
    channel = _channel("hooked")
    config = environment(SSE_PUSH_KEEPALIVE=30.0)
    with gunicorn(APP, env=config, extra_args=("-c", str(settings))) as server:
        with _closing([opened(server, f"/events?channel={channel}")]) as (stream,):
            _wait_parked(server, 1)
            line = f"/events channel={channel}"
            wait_for(lambda: calls.exists() and line in calls.read_text().splitlines(), 5)
            (event_id,) = _publish(server, channel, ["after the hook"])
            assert pump([stream], lambda: stream.event_count == 1, 10)
            assert _events(stream) == [("after the hook", event_id)]
        wait_for(lambda: _stats(server)["live"] == 0, 5)
    assert calls.read_text().splitlines().count(line) == 1


# -- 5. keepalives of parked streams -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
def test_a_parked_stream_gets_keepalives_unless_data_flows(
    broker: str, request: pytest.FixtureRequest
) -> None:
    """With a 1 s keepalive, an idle parked stream gets ``: keepalive`` about every
    second from the table's timers; a stream that gets an event every 0.3 s gets
    none (data resets the timer)."""
    quiet_channel, busy_channel = _channel("quiet"), _channel("busy")
    config = _config(broker, request, SSE_PUSH_KEEPALIVE=1.0)
    with gunicorn(APP, env=config) as server, _closing([]) as streams:
        quiet = opened(server, f"/events?channel={quiet_channel}")
        busy = opened(server, f"/events?channel={busy_channel}")
        streams += [quiet, busy]
        _wait_parked(server, 2)
        quiet_mark, busy_mark = len(quiet.body), len(busy.body)
        arrivals: list[float] = []

        def note() -> bool:
            if _keepalives(quiet.body[quiet_mark:]) > len(arrivals):
                arrivals.append(time.monotonic())
            return False

        stop = threading.Event()
        sent: list[str] = []

        def publish() -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.wait(0.3):
                    data = f"tick {len(sent)}"
                    reply = client.post(
                        f"{server.url}/publish", json={"channel": busy_channel, "data": data}
                    )
                    reply.raise_for_status()
                    sent.append(data)

        publisher = threading.Thread(target=publish)
        started = time.monotonic()
        publisher.start()
        try:
            pump(streams, note, 4.5)
        finally:
            stop.set()
            publisher.join(10)
        watched = time.monotonic() - started
        assert pump([busy], lambda: busy.event_count == len(sent), 10)
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    print(f"\nkeepalives of the idle stream: {len(arrivals)} in {watched:.1f} s, gaps {gaps}")
    assert len(arrivals) >= 3, arrivals
    assert len(arrivals) <= watched / 1.0 + 1
    assert all(0.6 <= gap <= 2.0 for gap in gaps), gaps
    assert len(sent) >= 8
    assert _keepalives(busy.body[busy_mark:]) == 0, busy.body[busy_mark:][-300:]


# -- 6. hang-up and revoke of parked streams ----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("broker", BROKERS)
def test_a_parked_stream_s_hang_up_and_revoke(broker: str, request: pytest.FixtureRequest) -> None:
    """A client of a parked stream that closes is released within a second (a
    ``client`` disconnect); a revoked parked stream gets its stop chunk, or a
    spread ``retry:`` with ``reconnect``; the other streams stay parked."""
    room, gone, stopped, moved = (_channel(n) for n in ("room", "gone", "stopped", "moved"))
    config = _config(broker, request, SSE_PUSH_KEEPALIVE=30.0)
    with gunicorn(APP, env=config) as server, _closing([]) as streams:
        streams += [opened(server, f"/events?channel={room}") for _ in range(3)]
        hanging_up = opened(server, f"/events?channel={gone}")
        revoked = opened(server, f"/events?channel={stopped}")
        rerouted = opened(server, f"/events?channel={moved}")
        streams += [hanging_up, revoked, rerouted]
        _wait_parked(server, 6)
        before = _stats(server)

        hanging_up.close()
        released = wait_for(lambda: _stats(server)["live"] == 5, 1.5)
        stats = _stats(server)
        assert stats["parked"] == 5
        disconnects = stats["disconnects"]
        assert disconnects.get("client", 0) == before["disconnects"].get("client", 0) + 1

        assert _revoke(server, stopped) == 1
        assert pump([revoked], lambda: revoked.eof, 10)
        assert _revoke(server, moved, reconnect=True) == 1
        assert pump([rerouted], lambda: rerouted.eof, 10)
        _wait_parked(server, 3)
        (event_id,) = _publish(server, room, ["still here"])
        room_streams = streams[:3]
        assert pump(room_streams, lambda: all(s.event_count == 1 for s in room_streams), 10)
        assert all(_events(s) == [("still here", event_id)] for s in room_streams)
        stats = _stats(server)
    print(f"\nhang-up released after {released:.2f} s")
    assert revoked.terminated
    stop = wire.parse(revoked.body)
    assert _last_comment(revoked.body) == "closed: revoked"
    assert (stop.retry, stop.last_event_id) == (100, STOP_ID)
    assert revoked.body.endswith(b"id: %b\n\n" % STOP_ID.encode())
    assert rerouted.terminated
    moved_parsed = wire.parse(rerouted.body)
    assert _last_comment(rerouted.body) == "closed: revoked"
    assert moved_parsed.retry is not None and 1000 <= moved_parsed.retry <= 3000
    assert moved_parsed.last_event_id != STOP_ID
    assert stats["live"] == 3 and stats["parked"] == 3
    assert "Traceback" not in server.output(), server.output()[-3000:]
