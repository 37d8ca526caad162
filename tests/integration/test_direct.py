"""Direct writes: the fan-out writing to waiting streams' sockets itself.

The broker tests run a reader thread parked in ``get()`` against a consumer
(``Sink``) that records what the broker hands it. The writer tests use a real memory broker and
a real socket pair in this process, with gevent running the flush in the main
thread. The integration tests run this package's gunicorn worker class
(``-k flask_sse_push.servers.gunicorn.GeventWorker``) on the memory broker
and on a real redis-server, and check, with a chunked-body decoder and a WHATWG
parser that are independent of the package, that what the direct path writes
parses back to exactly what was published, also when the kernel takes only
part of a chunk.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import typing as t

import gevent
import httpx
import pytest
from gevent import socket as gsocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_sse_push import MemoryBroker, Publisher, ServerSentEvent
from flask_sse_push.connections import LiveStream, StreamInfo, StreamRegistry
from flask_sse_push.exceptions import SubscriptionClosed
from flask_sse_push.metrics import Metrics
from flask_sse_push.servers.fastpath import Carrier, DirectWriter, Flusher
from tests.apps.lifecycle_app import environment
from tests.support import wire
from tests.support.raw_client import RawStream, pump
from tests.support.servers import Gunicorn, RedisServer, gunicorn

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from flask_sse_push.brokers.base import Subscription

APP = "tests.apps.lifecycle_app:create_app()"


class Reader:
    """A thread parked in ``subscription.get()``, recording what each call returned."""

    def __init__(self, subscription: Subscription, timeout: float = 5.0) -> None:
        self.subscription = subscription
        self.timeout = timeout
        self.returns: list[list[ServerSentEvent]] = []
        self.ended: SubscriptionClosed | None = None
        self.returned = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        # get() marks itself waiting before it blocks; give it the moment to.
        time.sleep(0.05)

    def _run(self) -> None:
        try:
            self.returns.append(self.subscription.get(self.timeout))
        except SubscriptionClosed as closed:
            self.ended = closed
        self.returned.set()

    def join(self) -> None:
        self.thread.join(self.timeout + 1)
        assert not self.thread.is_alive()


# -- the broker's side ----------------------------------------------------------


class Sink:
    """A consumer that records what it is given, and takes all of it or part of it.

    It stands in for the stream's socket writer, which the tests further down
    exercise for real; here the broker's side of the contract is under test.
    """

    def __init__(self, *, takes_all: bool = True, schedules: bool = True) -> None:
        self.takes_all = takes_all
        self.schedules = schedules
        self.jobs: list[t.Callable[[], None]] = []
        self.writes: list[list[ServerSentEvent]] = []

    def defer(self, job: t.Callable[[], None]) -> bool:
        if self.schedules:
            self.jobs.append(job)
        return self.schedules

    def take(self, events: list[ServerSentEvent]) -> bool:
        self.writes.append(events)
        return self.takes_all

    def run_jobs(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


def _ids(events: list[ServerSentEvent]) -> list[str | None]:
    return [event.id for event in events]


def test_parked_readers_get_one_shared_batch_and_stay_asleep() -> None:
    broker = MemoryBroker()
    sink = Sink()
    subscriptions = [broker.subscribe(["room"]) for _ in range(3)]
    for subscription in subscriptions:
        assert subscription.set_consumer(sink)
    readers = [Reader(subscription, timeout=0.5) for subscription in subscriptions]
    ids = [broker.publish("room", ServerSentEvent(f"e{n}")) for n in range(4)]
    assert len(sink.jobs) == 1, "one job per channel and pass, not per client or event"
    sink.run_jobs()
    assert [_ids(batch) for batch in sink.writes] == [ids] * 3
    assert sink.writes[0] is sink.writes[1] is sink.writes[2], "encoded once: one list"
    for reader in readers:
        assert not reader.returned.wait(0.1), "a reader was woken for written events"
    for reader in readers:
        reader.join()
        assert reader.returns == [[]]


def test_a_reader_whose_sink_lags_wakes_and_then_gets_events_itself() -> None:
    broker = MemoryBroker()
    sink = Sink(takes_all=False)
    subscription = broker.subscribe(["room"])
    subscription.set_consumer(sink)
    reader = Reader(subscription)
    first = broker.publish("room", ServerSentEvent("partly written"))
    sink.run_jobs()
    assert _ids(sink.writes[0]) == [first]
    assert reader.returned.wait(2), "the reader must wake to finish the write"
    reader.join()
    assert reader.returns == [[]]
    second = broker.publish("room", ServerSentEvent("queued"))
    assert sink.jobs == []
    assert _ids(subscription.get(0)) == [second]


def test_a_reader_that_wakes_before_the_flush_loses_nothing() -> None:
    broker = MemoryBroker()
    sink = Sink()
    subscription = broker.subscribe(["room"])
    subscription.set_consumer(sink)
    reader = Reader(subscription, timeout=0.2)
    ids = [broker.publish("room", ServerSentEvent(f"e{n}")) for n in range(3)]
    reader.join()  # the keepalive timeout comes before the flush
    assert _ids(reader.returns[0]) == ids
    sink.run_jobs()
    assert sink.writes == [], "what the reader took must not be written again"


def test_several_channels_are_written_in_publish_order() -> None:
    broker = MemoryBroker()
    sink = Sink()
    subscription = broker.subscribe(["a", "b"])
    subscription.set_consumer(sink)
    reader = Reader(subscription, timeout=0.5)
    ids = [broker.publish(channel, ServerSentEvent(channel)) for channel in "abab"]
    sink.run_jobs()
    assert [_ids(batch) for batch in sink.writes] == [ids]
    reader.join()
    assert reader.returns == [[]]


def test_a_reader_is_woken_when_the_job_cannot_be_scheduled() -> None:
    broker = MemoryBroker()
    subscription = broker.subscribe(["room"])
    subscription.set_consumer(Sink(schedules=False))
    for attempt in range(2):  # and again: a failed attempt must not leave a job "due"
        reader = Reader(subscription)
        event_id = broker.publish("room", ServerSentEvent(f"from another thread {attempt}"))
        assert reader.returned.wait(2), f"round {attempt}: the reader was not woken"
        reader.join()
        assert _ids(reader.returns[0]) == [event_id]


def test_a_several_channel_reader_is_woken_again_after_a_failed_defer() -> None:
    """A mailbox with its own hand-off job (several channels) must not keep a
    failed job as pending: the next event would then wake no one."""
    broker = MemoryBroker()
    subscription = broker.subscribe(["a", "b"])
    subscription.set_consumer(Sink(schedules=False))
    for attempt in range(2):
        reader = Reader(subscription)
        event_id = broker.publish("ab"[attempt], ServerSentEvent(f"round {attempt}"))
        assert reader.returned.wait(2), f"round {attempt}: the reader was not woken"
        reader.join()
        assert _ids(reader.returns[0]) == [event_id]


def test_closing_a_parked_subscription_ends_its_reader() -> None:
    broker = MemoryBroker()
    sink = Sink()
    subscription = broker.subscribe(["room"])
    subscription.set_consumer(sink)
    reader = Reader(subscription)
    broker.publish("room", ServerSentEvent("x"))
    subscription.close()
    sink.run_jobs()
    assert sink.writes == []
    reader.join()
    assert reader.ended is not None and reader.ended.reason == "closed"
    assert broker.subscriber_count() == 0


def test_parked_readers_overflow_like_queued_ones() -> None:
    broker = MemoryBroker(queue_size=5)
    sink = Sink()
    subscription = broker.subscribe(["room"])
    subscription.set_consumer(sink)
    reader = Reader(subscription)
    for n in range(6):
        broker.publish("room", ServerSentEvent(f"e{n}"))
    reader.join()
    assert reader.ended is not None and reader.ended.reason == "overflow"


def test_turning_direct_delivery_off_wakes_readers_again() -> None:
    broker = MemoryBroker()
    subscription = broker.subscribe(["room"])
    subscription.set_consumer(Sink())
    reader = Reader(subscription)
    subscription.set_consumer(None)  # from another thread, while the reader is parked
    assert reader.returned.wait(2), "a parked reader must wake when direct delivery stops"
    reader.join()
    assert reader.returns == [[]]
    reader = Reader(subscription)
    event_id = broker.publish("room", ServerSentEvent("woken"))
    assert reader.returned.wait(2), "without direct delivery a publish must wake the reader"
    reader.join()
    assert _ids(reader.returns[0]) == [event_id]


# -- the writer's side ---------------------------------------------------------


def _unchunk(raw: bytes) -> bytes:
    """Decode an HTTP/1.1 chunked body; fail on anything malformed."""
    body = b""
    while raw:
        size_line, sep, rest = raw.partition(b"\r\n")
        assert sep, f"truncated chunk header: {raw[:40]!r}"
        size = int(size_line, 16)
        assert rest[size : size + 2] == b"\r\n", "chunk not followed by CRLF"
        body += rest[:size]
        raw = rest[size + 2 :]
    return body


class Response:
    """The two fields of gunicorn's response object the writer uses: its framing,
    and the body byte count it logs."""

    def __init__(self, *, chunked: bool) -> None:
        self.chunked = chunked
        self.sent = 0


def _writer(
    sock: gsocket.socket,
    flusher: Flusher,
    *,
    chunked: bool = True,
) -> tuple[DirectWriter, Response]:
    response = Response(chunked=chunked)
    live = LiveStream(StreamInfo(channels=("room",)), None)
    writer = DirectWriter(Carrier(sock, response), flusher, live=live)
    return writer, response


@pytest.fixture
def flusher() -> Flusher:
    return Flusher()


@pytest.fixture
def pair() -> Iterator[tuple[gsocket.socket, gsocket.socket]]:
    server, client = gsocket.socketpair()
    yield server, client
    server.close()
    client.close()


def _drain(sock: gsocket.socket, end: bytes, timeout: float = 10) -> bytes:
    """Read until the data ends with ``end`` (or ``timeout`` passes)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(end) and time.monotonic() < deadline:
        try:
            with gevent.Timeout(0.5):
                data += sock.recv(1 << 20)
        except gevent.Timeout:
            continue
    return data


def test_the_flush_writes_one_chunk_per_waiting_stream(
    pair: tuple[gsocket.socket, gsocket.socket],
) -> None:
    server, client = pair
    broker = MemoryBroker()
    subscription = broker.subscribe(["room"])
    metrics = Metrics()
    flusher = Flusher(metrics)
    writer, response = _writer(server, flusher)
    assert subscription.set_consumer(writer)
    reader = Reader(subscription, timeout=1.0)
    passes = flusher.passes
    published = [ServerSentEvent(f"line {n}\nsecond", event="tick") for n in range(5)]
    ids = [broker.publish("room", event) for event in published]
    gevent.sleep(0)  # the publisher yields: the flush runs
    assert flusher.passes == passes + 1
    raw = _drain(client, b"\n\n\r\n")
    body = _unchunk(raw)
    assert response.sent == len(body), "the access log's byte count must include these"
    assert raw.count(b"\r\n") == 2, "five events ready together make one chunk"
    parsed = wire.parse(body).events
    assert [(p.type, p.data, p.last_event_id) for p in parsed] == [
        ("tick", f"line {n}\nsecond", event_id) for n, event_id in enumerate(ids)
    ]
    assert (
        metrics.snapshot(broker, StreamRegistry(max_connections=None, send_timeout=1, retry=None))[
            "deliveries"
        ]
        == 5
    )
    reader.join()
    assert reader.returns == [[]], "the reader was woken for events already written"


def _deliveries(metrics: Metrics, broker: MemoryBroker) -> tuple[int, int]:
    registry = StreamRegistry(max_connections=None, send_timeout=1, retry=None)
    snapshot = metrics.snapshot(broker, registry)
    return snapshot["deliveries"], snapshot["resets"]


def test_a_pass_counts_every_stream_s_events_and_resets_once_each() -> None:
    """Counted per batch, not per stream: still one count per event per stream."""
    broker = MemoryBroker()
    metrics = Metrics()
    flusher = Flusher(metrics)
    pairs = [gsocket.socketpair() for _ in range(4)]
    try:
        # Three streams on one channel share a batch; one on two channels has its own list.
        subscriptions = [broker.subscribe(["room"]) for _ in range(3)]
        subscriptions.append(broker.subscribe(["room", "other"]))
        readers = []
        for (server, _), subscription in zip(pairs, subscriptions, strict=True):
            writer, _ = _writer(server, flusher)
            assert subscription.set_consumer(writer)
            readers.append(Reader(subscription, timeout=1.0))
        gevent.sleep(0.05)  # every reader parks
        broker.publish("room", ServerSentEvent("one"))
        broker.publish("room", ServerSentEvent("gap", event="reset"))
        gevent.sleep(0)
        broker.publish("other", ServerSentEvent("two"))
        gevent.sleep(0)
        for (_, client), expected in zip(pairs, [2, 2, 2, 3], strict=True):
            body = _unchunk(_drain(client, b"\n\n\r\n" * (1 if expected == 2 else 2)))
            assert len(wire.parse(body).events) == expected
        assert _deliveries(metrics, broker) == (2 * 3 + 3, 4)
        for reader in readers:
            reader.join()
    finally:
        for server, client in pairs:
            server.close()
            client.close()


def test_a_partial_write_is_finished_by_the_stream_whole(
    pair: tuple[gsocket.socket, gsocket.socket], flusher: Flusher
) -> None:
    server, client = pair
    server.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, 4096)
    broker = MemoryBroker()
    subscription = broker.subscribe(["room"])
    writer, _ = _writer(server, flusher)
    subscription.set_consumer(writer)
    reader = Reader(subscription)
    big = "x" * 2_000_000
    event_id = broker.publish("room", ServerSentEvent(big))
    gevent.sleep(0)
    assert writer.unsent, "a 2 MB chunk should not fit in the socket buffer at once"
    assert reader.returned.wait(2), "the stream was not woken to finish its chunk"
    reader.join()
    receiving = gevent.spawn(_drain, client, b"\n\n\r\n")
    assert writer.finish_chunk()
    assert writer.unsent is None
    raw = receiving.get(timeout=10)
    (parsed,) = wire.parse(_unchunk(raw)).events
    assert (parsed.data, parsed.last_event_id) == (big, event_id)


def test_an_http_1_0_stream_is_written_unframed(
    pair: tuple[gsocket.socket, gsocket.socket], flusher: Flusher
) -> None:
    server, client = pair
    broker = MemoryBroker()
    subscription = broker.subscribe(["room"])
    subscription.set_consumer(_writer(server, flusher, chunked=False)[0])
    reader = Reader(subscription, timeout=0.5)
    event_id = broker.publish("room", ServerSentEvent("plain"))
    gevent.sleep(0)
    assert _drain(client, b"\n\n") == f"id: {event_id}\ndata: plain\n\n".encode()
    reader.join()


def test_a_publisher_in_another_thread_wakes_the_stream_instead(
    pair: tuple[gsocket.socket, gsocket.socket], flusher: Flusher
) -> None:
    """Direct writes run in the hub's thread only; from elsewhere the stream wakes."""
    server, client = pair
    broker = MemoryBroker()
    subscription = broker.subscribe(["room"])
    subscription.set_consumer(_writer(server, flusher)[0])
    reader = Reader(subscription)
    ids: list[str] = []
    publisher = threading.Thread(
        target=lambda: ids.append(broker.publish("room", ServerSentEvent("x")))
    )
    publisher.start()
    publisher.join(5)
    assert reader.returned.wait(2), "the stream was not woken"
    reader.join()
    assert _ids(reader.returns[0]) == ids
    gevent.sleep(0.05)
    server.close()
    assert client.recv(100) == b"", "nothing may be written from the other thread"


# -- under the package's gunicorn worker class --------------------------------------------------


def _stats(server: Gunicorn) -> dict[str, t.Any]:
    reply = httpx.get(f"{server.url}/stats", timeout=10)
    reply.raise_for_status()
    result: dict[str, t.Any] = reply.json()
    return result


def _publish(server: Gunicorn, events: list[dict[str, t.Any]], channel: str) -> list[str]:
    reply = httpx.post(
        f"{server.url}/publish", json={"channel": channel, "events": events}, timeout=10
    )
    reply.raise_for_status()
    ids: list[str] = reply.json()["ids"]
    return ids


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    """The app under gunicorn, on each broker that supports direct delivery."""
    with contextlib.ExitStack() as stack:
        config: dict[str, object] = {"SSE_PUSH_KEEPALIVE": 5.0}
        if request.param == "redis":
            config["SSE_PUSH_BROKER_URL"] = stack.enter_context(RedisServer()).url
        yield stack.enter_context(gunicorn(APP, env=environment(**config)))


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
_field = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\0"),
    min_size=1,
    max_size=20,
)
_events = st.lists(
    st.fixed_dictionaries({"data": _text}, optional={"event": _field}),
    min_size=1,
    max_size=30,
)


@pytest.mark.integration
@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events, http_version=st.sampled_from(["1.1", "1.0"]))
def test_what_is_written_directly_parses_back_exactly(
    server: Gunicorn, events: list[dict[str, t.Any]], http_version: str
) -> None:
    streams = [
        RawStream(server.port, "/events?channel=direct", http_version=http_version)
        for _ in range(3)
    ]
    try:
        assert pump(streams, lambda: all(s.body for s in streams), 10), "streams did not open"
        time.sleep(0.05)  # let each stream park in get()
        passes = _stats(server)["direct_passes"]
        ids = _publish(server, [*events, {"data": "end"}], "direct")
        # CR and CRLF in data are line breaks on the wire: they arrive as LF.
        expected = [
            (item.get("event") or "message", re.sub(r"\r\n?", "\n", item["data"]), event_id)
            for item, event_id in zip([*events, {"data": "end"}], ids, strict=True)
        ]
        last = f"id: {ids[-1]}\ndata: end\n\n".encode()
        assert pump(streams, lambda: all(last in s.body for s in streams), 10)
        assert _stats(server)["direct_passes"] > passes, "the direct path did not write"
        for stream in streams:
            assert stream.headers.get("transfer-encoding") == (
                "chunked" if http_version == "1.1" else None
            )
            parsed = wire.parse(stream.body)
            got = [(p.type, p.data, p.last_event_id) for p in parsed.events]
            assert got == expected
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.integration
@pytest.mark.slow
def test_a_slow_reader_gets_every_byte_in_order(server: Gunicorn) -> None:
    """A tiny receive window makes direct writes partial; nothing is torn or lost."""
    slow = RawStream(server.port, "/events?channel=slow", rcvbuf=4096)
    fast = RawStream(server.port, "/events?channel=slow")
    try:
        assert pump([slow, fast], lambda: bool(slow.body and fast.body), 10)
        time.sleep(0.05)
        events = [{"data": f"{n:04d}" + "y" * 20_000} for n in range(60)]
        ids = []
        for start in range(0, len(events), 10):
            ids += _publish(server, events[start : start + 10], "slow")
        assert pump([slow, fast], lambda: slow.event_count >= 60 and fast.event_count >= 60, 30)
        for stream in (slow, fast):
            got = [(p.data, p.last_event_id) for p in wire.parse(stream.body).events]
            assert got == [(e["data"], i) for e, i in zip(events, ids, strict=True)]
    finally:
        slow.close()
        fast.close()


@pytest.mark.integration
@pytest.mark.slow
def test_direct_writes_can_be_turned_off() -> None:
    config = environment(SSE_PUSH_KEEPALIVE=5.0, SSE_PUSH_DIRECT_WRITES=False)
    with gunicorn(APP, env=config) as off:
        stream = RawStream(off.port, "/events?channel=off")
        try:
            assert pump([stream], lambda: bool(stream.body), 10)
            time.sleep(0.05)
            ids = _publish(off, [{"data": "through gunicorn"}], "off")
            assert pump([stream], lambda: stream.event_count >= 1, 10)
            (parsed,) = wire.parse(stream.body).events
            assert (parsed.data, parsed.last_event_id) == ("through gunicorn", ids[0])
            assert _stats(off)["direct_passes"] == 0
        finally:
            stream.close()


@pytest.mark.integration
@pytest.mark.slow
def test_a_redis_backlog_is_written_out_in_passes_without_overflow() -> None:
    """A worker that was not scheduled finds a backlog of messages on Redis.

    Its listener reads them from its buffer without ever blocking, so unless it
    lets the direct writes run now and then, every client's queue fills up and
    overflows. Here the backlog (600 events) is three times the queue size.
    """
    with RedisServer() as redis_server:
        config = environment(
            SSE_PUSH_KEEPALIVE=5.0,
            SSE_PUSH_BROKER_URL=redis_server.url,
            SSE_PUSH_QUEUE_SIZE=200,
        )
        with gunicorn(APP, env=config) as site:
            streams = [RawStream(site.port, "/events?channel=backlog") for _ in range(3)]
            publisher = Publisher(redis_server.url)
            try:
                assert pump(streams, lambda: all(s.body for s in streams), 10)
                time.sleep(0.1)
                worker = _stats(site)["pid"]
                os.kill(worker, signal.SIGSTOP)
                try:
                    ids = [publisher.publish(f"n{n}", channel="backlog") for n in range(600)]
                finally:
                    os.kill(worker, signal.SIGCONT)
                assert pump(streams, lambda: all(s.event_count >= 600 for s in streams), 20)
                for stream in streams:
                    got = [(p.data, p.last_event_id) for p in wire.parse(stream.body).events]
                    assert got == [(f"n{n}", i) for n, i in enumerate(ids)]
                    assert not stream.done, "the stream ended (overflow?)"
            finally:
                publisher.close()
                for stream in streams:
                    stream.close()


@pytest.mark.integration
@pytest.mark.slow
def test_the_real_gunicorn_and_gevent_pass_the_worker_s_self_check() -> None:
    with gunicorn(APP, env=environment(SSE_PUSH_KEEPALIVE=5.0)) as live:
        stream = RawStream(live.port, "/events?channel=check")
        try:
            assert pump([stream], lambda: bool(stream.body), 10)
            time.sleep(0.05)
            _publish(live, [{"data": "direct"}], "check")
            assert pump([stream], lambda: stream.event_count >= 1, 10)
            assert _stats(live)["direct_passes"] > 0
        finally:
            stream.close()
        assert "without direct writes" not in live.output()


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_missing_an_internal_warns_once_and_serves_streams_the_ordinary_way() -> None:
    config = ("-c", "tests/apps/gunicorn_dropped_attribute.py")
    with gunicorn(APP, env=environment(SSE_PUSH_KEEPALIVE=5.0), extra_args=config) as lacking:
        streams = [RawStream(lacking.port, "/events?channel=lacking") for _ in range(2)]
        try:
            assert pump(streams, lambda: all(s.body for s in streams), 10)
            time.sleep(0.05)
            ids = _publish(lacking, [{"data": "one"}, {"data": "two"}], "lacking")
            assert pump(streams, lambda: all(s.event_count >= 2 for s in streams), 10)
            for stream in streams:
                got = [(p.data, p.last_event_id) for p in wire.parse(stream.body).events]
                assert got == [("one", ids[0]), ("two", ids[1])]
            assert _stats(lacking)["direct_passes"] == 0
        finally:
            for stream in streams:
                stream.close()
        assert lacking.output().count("without direct writes") == 1
        assert "Hub.gone" in lacking.output()
