"""The parking table in one process: its timer heap, its ready queue, and the
short-lived greenlet of a stream with a write to finish.

Each stream is a real :class:`~flask_sse_push.servers.parking.ParkedStream`
with a real :class:`~flask_sse_push.servers.fastpath.DirectWriter` on one end
of a socket pair; gevent runs the table in this thread. Its source is a small
scripted stand-in for the runtime's ``BodyChunks`` (whose own tests are
elsewhere): it hands out the chunks a test gives it, a keepalive when the
table says one is due, and its last chunk at its deadline. The client end is
read as bytes, de-chunked and parsed with the WHATWG parser of
``tests.support.wire``.
"""

from __future__ import annotations

import _socket
import threading
import time
import typing as t

import gevent
import pytest
from gevent import socket as gsocket

from flask_sse_push import ServerSentEvent
from flask_sse_push.connections import LiveStream, StreamInfo
from flask_sse_push.servers.base import StreamBody
from flask_sse_push.servers.fastpath import Carrier, DirectWriter, Flusher
from flask_sse_push.servers.parking import ParkedStream, ParkingTable
from tests.support import wire

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

KEEPALIVE = b": keepalive\n\n"
LAST = b": closed: lifetime\n\nretry: 1500\n\n"


class Response:
    """What the writer reads of gunicorn's response object: framing and byte count."""

    def __init__(self) -> None:
        self.chunked = True
        self.sent = 0


class Source:
    """A stream body source that sends what it is given (see the module docstring)."""

    def __init__(self, keepalive: float, lifetime: float | None = None) -> None:
        self.live = LiveStream(StreamInfo(channels=("room",)), None)
        self.keepalive = keepalive
        self.deadline = None if lifetime is None else time.monotonic() + lifetime
        self.opened = True
        self.pending: list[bytes] = []
        self.done = False
        self.polls = 0
        self.released = False
        self.wake: Callable[[], None] | None = None

    def chunks(self) -> Iterator[bytes]:
        return iter(())

    def opening(self) -> bytes:
        return b""

    def hand_to_writer(self) -> bool:
        return True

    def can_park(self) -> bool:
        return True

    def park(self, wake: Callable[[], None]) -> bool:
        if self.pending or self.done:
            return False
        self.wake = wake
        return True

    def poll_chunk(self, keepalive_due: bool) -> bytes | None:
        self.polls += 1
        if self.done:
            return None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.done = True
            return LAST
        if self.pending:
            return self.pending.pop(0)
        return KEEPALIVE if keepalive_due else b""

    def release(self) -> None:
        self.released = True

    def give(self, chunk: bytes) -> None:
        """Have ``chunk`` sent, and wake the stream as a subscription would."""
        self.pending.append(chunk)
        wake, self.wake = self.wake, None
        if wake is not None:
            wake()


class Access:
    """Records the access-log line a stream writes when it ends."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, float]] = []

    def write(self, sent: int) -> None:
        self.lines.append((sent, time.monotonic()))


class Client:
    """The client end of a stream: reads in a greenlet, noting when each body piece came."""

    def __init__(self, sock: gsocket.socket) -> None:
        self.sock = sock
        self.raw = b""
        self.eof = False
        self.reading = True
        self.arrivals: list[tuple[float, bytes]] = []
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            while not self.reading:
                gevent.sleep(0.01)
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
                return
            self.raw += data
            self.arrivals.append((time.monotonic(), data))

    @property
    def body(self) -> bytes:
        return _unchunk(self.raw)

    def stop(self) -> None:
        self._greenlet.kill()


def _unchunk(raw: bytes) -> bytes:
    """De-chunk the complete chunks of ``raw``; fail on malformed framing."""
    body = b""
    while raw:
        size_line, sep, rest = raw.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if len(rest) < size + 2:
            break
        assert rest[size : size + 2] == b"\r\n", "chunk not followed by CRLF"
        body += rest[:size]
        raw = rest[size + 2 :]
    return body


class Parked:
    """One stream adopted by the table, and its client."""

    def __init__(
        self,
        table: ParkingTable,
        flusher: Flusher,
        source: Source,
        *,
        client_rcvbuf: int | None = None,
    ) -> None:
        server, client = gsocket.socketpair()
        if client_rcvbuf is not None:
            client.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_RCVBUF, client_rcvbuf)
            server.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_SNDBUF, client_rcvbuf)
        self.source = source
        self.response = Response()
        self.closed = False
        self.writer = DirectWriter(Carrier(server, self.response), flusher, live=source.live)
        source.live.writer = self.writer
        body = StreamBody(iter(()), on_close=self._closed, source=source)
        raw = _socket.socket(fileno=server.detach())
        raw.setblocking(False)
        self.access = Access()
        self.stream = ParkedStream(table, body, source, self.writer, raw, 0, self.access)
        self.writer.hand_over(raw, self.stream)
        self.client = Client(client)
        table.adopt(self.stream)

    def _closed(self) -> None:
        self.closed = True

    def write_directly(self, flusher: Flusher, event: ServerSentEvent) -> None:
        """Write ``event`` as the fan-out does, in a pass of the flusher."""
        flusher.add(lambda: None if self.writer.take([event]) else self.stream.wake())
        gevent.sleep(0)


@pytest.fixture
def table() -> ParkingTable:
    return ParkingTable()


@pytest.fixture
def flusher() -> Flusher:
    return Flusher()


@pytest.fixture
def parked(table: ParkingTable) -> Iterator[list[Parked]]:
    """The streams a test parks; their clients stop and their sockets close at the end."""
    made: list[Parked] = []
    yield made
    for item in made:
        item.client.stop()
        item.stream.close()
        item.client.sock.close()


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.01)


def _keepalives(body: bytes) -> int:
    return [comment.strip() for comment in wire.parse(body).comments].count("keepalive")


def test_one_timer_heap_sends_every_parked_stream_its_keepalives(
    table: ParkingTable, flusher: Flusher, parked: list[Parked]
) -> None:
    """Twenty idle streams wait parked; each gets a keepalive about every interval,
    and is parked again between them."""
    parked += [Parked(table, flusher, Source(keepalive=0.2)) for _ in range(20)]
    assert table.parked() == 20 and len(table) == 20
    gevent.sleep(1.1)
    for item in parked:
        count = _keepalives(item.client.body)
        assert 3 <= count <= 6, count
        times = [at for at, _ in item.client.arrivals]
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        assert all(0.15 <= gap <= 0.6 for gap in gaps), gaps
    _wait(lambda: table.parked() == 20, 1)


def test_data_written_directly_puts_the_keepalive_off(
    table: ParkingTable, flusher: Flusher, parked: list[Parked]
) -> None:
    """A parked stream written to every 0.1 s gets no keepalive (interval 0.3 s);
    once the events stop, the keepalives come again."""
    parked.append(Parked(table, flusher, Source(keepalive=0.3)))
    (item,) = parked
    for n in range(12):
        item.write_directly(flusher, ServerSentEvent(f"event {n}", id=str(n)))
        gevent.sleep(0.1)
    body = item.client.body
    assert [event.data for event in wire.parse(body).events] == [f"event {n}" for n in range(12)]
    assert _keepalives(body) == 0
    assert table.parked() == 1
    gevent.sleep(0.8)
    assert _keepalives(item.client.body) >= 1
    assert item.response.sent == 0, "the parked stream owns the byte count now"
    assert item.stream.sent == len(item.client.body)


def test_a_stream_is_woken_at_its_deadline_and_ends(
    table: ParkingTable, flusher: Flusher, parked: list[Parked]
) -> None:
    """The deadline comes before the keepalive: the timer wakes the stream, which
    writes its last chunk and the end of the body, closes, and logs its bytes."""
    started = time.monotonic()
    parked.append(Parked(table, flusher, Source(keepalive=30.0, lifetime=0.3)))
    (item,) = parked
    _wait(lambda: item.client.eof, 3)
    ended = time.monotonic() - started
    assert 0.25 <= ended <= 1.5, ended
    assert item.client.raw.endswith(b"0\r\n\r\n")
    assert item.client.body == LAST
    assert len(table) == 0 and table.parked() == 0
    assert item.closed and item.source.released and item.source.live.finished
    ((sent, _),) = item.access.lines
    assert sent == len(LAST)


def test_a_wake_from_another_thread_steps_the_stream_in_the_hub(
    table: ParkingTable, flusher: Flusher, parked: list[Parked]
) -> None:
    """A subscription woken by a publisher in another OS thread hands the stream to
    the hub's thread, where it writes its chunk and parks again."""
    parked.append(Parked(table, flusher, Source(keepalive=30.0)))
    (item,) = parked
    chunk = ServerSentEvent("from a thread", id="7").encode()
    thread = threading.Thread(target=item.source.give, args=(chunk,))
    thread.start()
    _wait(lambda: not thread.is_alive(), 5)
    _wait(lambda: item.client.body == chunk, 3)
    _wait(lambda: table.parked() == 1, 1)
    assert item.stream.sent == len(chunk)


def test_a_slow_reader_wakes_only_its_stream_which_parks_again(
    table: ParkingTable, flusher: Flusher, parked: list[Parked]
) -> None:
    """A chunk larger than the socket buffers leaves a write to finish: that stream
    is awake (not parked) until its client reads it all; the other streams stay
    parked and get their chunks; then it parks again, every byte in order."""
    slow = Parked(table, flusher, Source(keepalive=30.0), client_rcvbuf=4096)
    others = [Parked(table, flusher, Source(keepalive=30.0)) for _ in range(3)]
    parked += [slow, *others]
    slow.client.reading = False
    gevent.sleep(0.05)
    big = [ServerSentEvent(f"{n}:" + "x" * 300_000, id=str(n)).encode() for n in range(4)]
    for chunk in big:
        slow.source.give(chunk)
    gevent.sleep(0.2)
    assert table.parked() == 3, "the slow stream must be awake, finishing its write"
    assert len(slow.client.raw) == 0
    small = ServerSentEvent("small", id="s").encode()
    for item in others:
        item.source.give(small)
    _wait(lambda: all(item.client.body == small for item in others), 3)
    assert table.parked() == 3, "the others park again while the slow one writes"
    slow.client.reading = True
    _wait(lambda: len(slow.client.body) == sum(map(len, big)), 10)
    assert slow.client.body == b"".join(big)
    _wait(lambda: table.parked() == 4, 1)
    assert slow.writer.unsent is None


def test_drain_closes_the_streams_left_at_the_timeout(
    table: ParkingTable, flusher: Flusher, parked: list[Parked]
) -> None:
    """What is still parked when the graceful timeout is up is closed, its
    access-log line written; the count of them is returned."""
    parked += [Parked(table, flusher, Source(keepalive=30.0)) for _ in range(3)]
    started = time.monotonic()
    assert table.drain(0.3) == 3
    assert time.monotonic() - started >= 0.25
    assert len(table) == 0
    _wait(lambda: all(item.client.eof for item in parked), 2)
    assert all(item.closed and len(item.access.lines) == 1 for item in parked)
