"""uWSGI and Granian, each started for real on 127.0.0.1, with the same stream semantics.

The modes: uWSGI's gevent loop engine with monkey patching (``--gevent N
--gevent-monkey-patch``) and without it, uWSGI's threads mode (``--threads 8``,
with ``--master`` and without), and Granian's WSGI interface. waitress with its
default flags is here too, for the release of a closed client. Every test names
the fault of issue "every server Flask is deployed on" it guards against.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import typing as t

import httpx
import pytest

from tests.apps.lifecycle_app import LOG_VARIABLE, environment
from tests.support.browser_helpers import assert_full_countdown, chromium
from tests.support.countdown import check_countdown, read_sse
from tests.support.raw_client import RawStream, opened, pump, wait_for
from tests.support.servers import Gunicorn, flask_run, granian, stop, uwsgi, waitress

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIFECYCLE = "tests.apps.lifecycle_app:create_app"

#: The server modes, by the name the tests use: the flags that select them.
MODES: dict[str, tuple[str, ...]] = {
    "uwsgi-gevent": ("--master", "--die-on-term", "--gevent", "20", "--gevent-monkey-patch"),
    "uwsgi-threads": ("--threads", "8"),
    "uwsgi-threads-master": ("--master", "--die-on-term", "--threads", "8"),
    "granian": (),
}

#: The stream capacity each mode must choose: async cores less a tenth, threads
#: less a quarter (Granian: 512 blocking threads by default).
CAPACITY = {"uwsgi-gevent": 18, "uwsgi-threads": 6, "uwsgi-threads-master": 6, "granian": 384}

#: Servers that tell the application of their shutdown (waitress and ``flask run``
#: once their main loop has come round, at most a second after the first request).
TELLS_SHUTDOWN = ("uwsgi-gevent", "granian", "waitress", "flask-run")


@contextlib.contextmanager
def serve(
    kind: str,
    env: Mapping[str, str],
    *,
    app: str = LIFECYCLE,
    extra_args: tuple[str, ...] = (),
    http: str = "--http-socket",
) -> Iterator[Gunicorn]:
    """Run ``app`` (a ``module:factory``) on the server ``kind`` for the ``with`` block."""
    if kind == "granian":
        with granian(app, env=env, extra_args=MODES[kind] + extra_args) as server:
            yield server
    elif kind == "waitress":
        with waitress(app, env=env, extra_args=extra_args) as server:
            yield server
    elif kind == "flask-run":
        with flask_run(f"{app}()", env=env, extra_args=extra_args) as server:
            yield server
    else:
        args = MODES.get(kind, ()) + extra_args
        with uwsgi(f"{app}()", env=env, extra_args=args, http=http) as server:
            yield server


def _stats(server: Gunicorn) -> dict[str, t.Any]:
    reply = httpx.get(f"{server.url}/stats", timeout=10)
    reply.raise_for_status()
    result: dict[str, t.Any] = reply.json()
    return result


def _report(record_property: Callable[[str, object], None], name: str, value: float) -> None:
    record_property(name, round(value, 3))
    print(f"\n{name} = {value:.3f}")


# -- the countdown demo and a publish, on every mode ---------------------------


@pytest.mark.parametrize("kind", list(MODES))
def test_the_countdown_demo_runs(kind: str) -> None:
    """Fault 1: under uWSGI's gevent loop without patching, the countdown still
    said "connecting" after 21.9 s; no server but gunicorn, waitress and flask run
    was ever tried."""
    env = {"COUNTDOWN_INTERVAL": "0.05"}
    with serve(kind, env, app="example_app:create_app") as server:
        status, events = read_sse(f"{server.url}/api/sse")
        assert status == 200
        check_countdown([(e.event, e.data, e.id) for e in events])


@pytest.mark.parametrize("kind", ["uwsgi-gevent", "uwsgi-threads", "granian"])
def test_the_countdown_demo_runs_in_chromium(kind: str) -> None:
    """Fault 1: in Chromium the countdown still said "connecting" after 21.9 s."""
    from playwright.sync_api import expect

    with (
        serve(kind, {"COUNTDOWN_INTERVAL": "0.2"}, app="example_app:create_app") as server,
        chromium() as browser,
    ):
        page = browser.new_page()
        page.goto(server.url)
        expect(page.locator("#push-state")).to_have_text("open")
        page.click("#connect")
        items = page.locator("#messages li")
        expect(items).to_have_count(9, timeout=10_000)
        expect(page.locator("#state")).to_have_text("closed")
        assert_full_countdown(items.all_text_contents())


@pytest.mark.parametrize("kind", list(MODES))
def test_a_publish_reaches_an_open_stream_within_a_second(
    kind: str, record_property: Callable[[str, object], None]
) -> None:
    """Fault 1: a POST that publishes got no answer in 10 s while one stream waited."""
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=15.0)) as server:
        stream = opened(server, "/events?channel=room")
        started = time.time()
        reply = httpx.post(
            f"{server.url}/publish", json={"channel": "room", "data": "ping"}, timeout=5
        )
        assert reply.status_code == 200
        assert pump([stream], lambda: stream.event_count == 1, 5)
        (event,) = stream.events
        assert (event.data, event.id) == ("ping", reply.json()["ids"][0])
        took = event.at - started
        _report(record_property, f"publish_reached_stream_s_{kind}", took)
        assert took < 1.0
        stream.close()


@pytest.mark.parametrize("kind", list(MODES))
def test_a_waiting_stream_gets_keepalives(kind: str) -> None:
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=0.5)) as server:
        stream = opened(server)
        assert pump([stream], lambda: stream.body.count(b": keepalive\n\n") >= 2, 5)
        stream.close()


# -- the cap comes from the server, and ordinary requests get through ----------


def _open_many(server: Gunicorn, count: int) -> list[RawStream]:
    streams = [RawStream(server.port, "/events?channel=full") for _ in range(count)]
    assert pump(streams, lambda: all(s.body for s in streams), 20), "no answer to some streams"
    return streams


@pytest.mark.parametrize(
    ("kind", "extra_args", "capacity"),
    [
        ("uwsgi-gevent", (), 18),
        ("uwsgi-threads", (), 6),
        ("uwsgi-threads-master", (), 6),
        ("granian", ("--blocking-threads", "4"), 3),
    ],
)
def test_health_answers_with_the_cap_reached(
    kind: str, extra_args: tuple[str, ...], capacity: int
) -> None:
    """Fault 2: under ``uwsgi --threads 8`` and ``granian --blocking-threads 4``
    there was no cap and no warning: 8 (resp. 4) open streams and
    ``/events/health`` got no answer in 15 s."""
    env = {**environment(SSE_PUSH_KEEPALIVE=5.0), LOG_VARIABLE: "1"}
    with serve(kind, env, extra_args=extra_args) as server:
        streams = _open_many(server, capacity + 2)
        try:
            assert pump(streams, lambda: sum(s.done for s in streams) >= 2, 10)
            refused = [s for s in streams if s.done]
            assert len(refused) == 2
            for stream in refused:
                assert stream.status == 200 and b"unavailable: at capacity" in stream.body
                assert re.search(rb"retry: \d+\n\n$", stream.body)
            started = time.monotonic()
            health = httpx.get(f"{server.url}/events/health", timeout=5)
            assert health.status_code == 200
            assert health.json()["clients_connected"] == capacity
            assert time.monotonic() - started < 2
            stats = _stats(server)
            assert stats["capacity"] == capacity
            output = server.output()
            assert f"capacity: {capacity} stream(s) per worker process" in output
            if kind != "uwsgi-gevent":
                assert "every open stream holds one thread" in output
        finally:
            for stream in streams:
                stream.close()


def test_granian_default_capacity_comes_from_its_default_blocking_threads() -> None:
    with serve("granian", environment()) as server:
        assert _stats(server)["capacity"] == CAPACITY["granian"]


# -- a closed client is released -----------------------------------------------


@pytest.mark.parametrize(
    ("kind", "http"),
    [
        ("uwsgi-gevent", "--http-socket"),
        ("uwsgi-gevent", "--http"),
        ("uwsgi-threads", "--http-socket"),
        ("uwsgi-threads-master", "--http"),
        ("waitress", ""),
    ],
)
def test_a_closed_client_is_released_within_a_second(
    kind: str, http: str, record_property: Callable[[str, object], None]
) -> None:
    """Fault 4: closed clients were released at the second keepalive: waitress
    after 30.15 s, uWSGI threads after 30.06 s."""
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=15.0), http=http) as server:
        stream = opened(server)
        assert _stats(server)["live"] == 1
        stream.close()
        released_after = wait_for(lambda: _stats(server)["live"] == 0, 5)
        _report(record_property, f"closed_client_released_after_s_{kind}{http}", released_after)
        assert released_after < 1.5
        assert _stats(server)["disconnects"] == {"client": 1}


def test_granian_releases_a_closed_client_at_the_first_write(
    record_property: Callable[[str, object], None],
) -> None:
    """Fault 4: Granian hides the socket, so the first write after the client left
    (the next keepalive) is the earliest it can be seen; never the second one."""
    keepalive = 2.0
    with serve("granian", environment(SSE_PUSH_KEEPALIVE=keepalive)) as server:
        stream = opened(server)
        time.sleep(0.2)
        stream.close()
        released_after = wait_for(lambda: _stats(server)["live"] == 0, 4 * keepalive)
        _report(record_property, "closed_client_released_after_s_granian", released_after)
        assert released_after < keepalive + 1.0
        assert _stats(server)["disconnects"] == {"client": 1}


def test_a_blocked_source_is_closed_when_its_client_leaves_under_uwsgi_gevent() -> None:
    """Generator close: a source sleeping between items is killed where it blocks."""
    with serve("uwsgi-gevent", environment(SSE_PUSH_KEEPALIVE=15.0)) as server:
        stream = RawStream(server.port, "/source?kind=sleep")
        assert pump([stream], lambda: stream.event_count >= 1, 10)
        stream.close()
        left = time.time()
        wait_for(lambda: bool(_stats(server)["sources_closed"]), 5)
        assert _stats(server)["sources_closed"][0] - left < 1.5


# -- shutdown ------------------------------------------------------------------

_CLOSED = re.compile(rb": closed: server shutting down\n\nretry: (\d+)\n\n$")


@pytest.mark.parametrize("kind", [*MODES, "waitress", "flask-run"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_with_three_open_streams_exits_within_five_seconds(
    kind: str, sig: int, record_property: Callable[[str, object], None]
) -> None:
    """Faults 1, 3 and 5: Granian never stopped with streams open (SIGTERM or
    SIGINT); uWSGI's gevent loop without ``--master`` did not stop in 40 s; streams
    were cut without the closed line and a spread ``retry:`` (waitress, ``flask
    run`` and uWSGI threads alike)."""
    with serve(kind, environment(SSE_PUSH_KEEPALIVE=15.0)) as server:
        streams = [opened(server) for _ in range(3)]
        try:
            if kind == "flask-run":
                time.sleep(1.0)  # its loop comes round every 0.5 s
            started = time.monotonic()
            server.process.send_signal(sig)
            server.process.wait(10)
            took = time.monotonic() - started
            _report(record_property, f"shutdown_s_{kind}_{signal.Signals(sig).name}", took)
            assert took < 5
            assert pump(streams, lambda: all(s.done for s in streams), 5)
            if kind in TELLS_SHUTDOWN:
                retries = []
                for stream in streams:
                    found = _CLOSED.search(stream.body)
                    assert found, stream.body[-200:]
                    if stream.headers.get("transfer-encoding") == "chunked":
                        # uWSGI's --http-socket sends no chunks: its body ends at EOF.
                        assert stream.terminated, "the chunked body did not end cleanly"
                    retries.append(int(found.group(1)))
                assert all(1000 <= retry <= 3000 for retry in retries)
        finally:
            for stream in streams:
                stream.close()
            stop(server.process)


def test_a_graceful_reload_of_a_uwsgi_gevent_worker_ends_its_streams_at_once() -> None:
    """A reloading worker (SIGHUP) waits for every running request: for open
    streams, until uWSGI's reload mercy (60 s) ran out."""
    with serve("uwsgi-gevent", environment(SSE_PUSH_KEEPALIVE=15.0)) as server:
        streams = [opened(server) for _ in range(3)]
        try:
            worker = _stats(server)["pid"]
            os.kill(worker, signal.SIGHUP)
            assert pump(streams, lambda: all(s.done for s in streams), 5)
            assert all(_CLOSED.search(stream.body) for stream in streams)
            wait_for(lambda: _stats(server)["pid"] != worker, 10, 0.2)  # a new worker serves
        finally:
            for stream in streams:
                stream.close()


# -- uWSGI's gevent loop without monkey patching --------------------------------


def test_uwsgi_gevent_without_monkey_patching_refuses_streams_and_says_why() -> None:
    """Fault 1: ``uwsgi --http … --gevent 1000`` froze the whole worker on one
    waiting stream, and the library logged nothing; without ``--master`` neither
    SIGTERM nor SIGINT stopped it in 40 s."""
    env = {**environment(SSE_PUSH_KEEPALIVE=15.0), LOG_VARIABLE: "1"}
    with serve("uwsgi-unpatched", env, extra_args=("--gevent", "100"), http="--http") as server:
        streams = [RawStream(server.port, "/events?channel=x") for _ in range(2)]
        try:
            assert pump(streams, lambda: all(s.done for s in streams), 10)
            for stream in streams:
                assert stream.status == 200
                assert b"--gevent-monkey-patch" in stream.body
                assert re.search(rb"retry: \d+\n\n$", stream.body)
            health = httpx.get(f"{server.url}/events/health", timeout=5)
            assert health.status_code == 200
            published = {"channel": "x", "data": "y"}
            reply = httpx.post(f"{server.url}/publish", json=published, timeout=5)
            assert reply.status_code == 200
            assert server.output().count("Add --gevent-monkey-patch") == 1
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)  # no --master: uWSGI's worker itself
            server.process.wait(10)
            assert time.monotonic() - started < 5
        finally:
            for stream in streams:
                stream.close()
