"""Direct writes: events go onto idle clients' sockets in one pass, without waking them.

Under this package's gunicorn worker class
(:class:`~flask_sse_push.servers.gunicorn.GeventWorker`) every stream is a greenlet waiting in
:meth:`~flask_sse_push.brokers.Subscription.get`. Waking each one to hand gunicorn
an event costs a switch into the greenlet and back; at a thousand clients that
is most of a broadcast's time, and it is paid again for every event. Instead, a
stream gives its subscription a :class:`DirectWriter`
(:meth:`~flask_sse_push.brokers.Subscription.set_consumer`), made from the
:class:`Carrier` the worker attached to the stream's body. The subscription
schedules a job when events arrive for a waiting stream; the jobs run in one
pass per process as soon as the publisher yields, and write each stream's
events with a single non-blocking ``send``, framed as the worker's response
object frames a chunk and added to its byte count, so gunicorn's access log
reports every byte. Streams that get the same events share one encoding per
pass.

A stream's greenlet takes over again only when the kernel does not take a whole
chunk: it wakes, finishes that chunk with an ordinary blocking write (watched by
the send timeout like any other), and carries on with the usual path. Chunks
written either way are whole, so the two never interleave inside one.
"""

from __future__ import annotations

import logging
import operator
import time
import typing as t

from ..event import RESET_EVENT
from ..sockets import PIECE
from ._gunicorn_internals import hub_thread, is_chunked, raw_socket

if t.TYPE_CHECKING:
    import _socket
    from collections.abc import Callable
    from datetime import datetime

    from ..event import ServerSentEvent
    from .base import CarriedStream, DeliveryCounter

logger = logging.getLogger("flask_sse_push")


class Carrier:
    """One response the worker lets the fast path write to: its socket and gunicorn's
    response object, which frames the body and counts its bytes.

    :param started: when the request began (``datetime.now()``), and
    :param environ: the request's WSGI environ, both for the access log of a
        stream that parks.
    """

    __slots__ = ("sock", "response", "started", "environ")

    def __init__(
        self,
        sock: t.Any,
        response: t.Any,
        started: datetime | None = None,
        environ: dict[str, t.Any] | None = None,
    ) -> None:
        self.sock = sock
        self.response = response
        self.started = started
        self.environ = environ


class _Pass:
    """One run of the scheduled jobs: what it encoded, and how often it wrote it.

    Streams that get the same events usually get the very same list (the
    memory broker hands one list to a whole channel), or lists of the very same
    event objects; either way they are encoded and framed once per pass, and
    the deliveries are counted once per batch, not per stream.
    """

    __slots__ = (
        "batch",
        "chunked",
        "data",
        "body_size",
        "resets",
        "takes",
        "events",
        "all_resets",
        "at",
    )

    def __init__(self, at: float = 0.0) -> None:
        #: ``time.monotonic()`` when the pass began: the writes' time, for keepalives.
        self.at = at
        self.batch: list[ServerSentEvent] = []
        self.chunked = False
        self.data = b""
        self.body_size = 0
        #: ``reset`` events in :attr:`batch`.
        self.resets = 0
        #: Streams :attr:`data` went to (a writer that finds ``batch`` here
        #: adds one itself, without calling :meth:`frame`).
        self.takes = 0
        #: Events and ``reset`` events delivered by earlier batches of this pass.
        self.events = 0
        self.all_resets = 0

    def frame(self, batch: list[ServerSentEvent], chunked: bool) -> bytes:
        """Return ``batch`` encoded (and framed as a chunk, if ``chunked``), counting one take."""
        previous = self.batch
        if chunked is self.chunked and (
            batch is previous
            or (len(batch) == len(previous) and all(map(operator.is_, batch, previous)))
        ):
            self.takes += 1
            return self.data
        self.settle()
        if len(batch) == 1:
            body = batch[0].encode()
            self.resets = 1 if batch[0].event == RESET_EVENT else 0
        else:
            body = b"".join([event.encode() for event in batch])
            self.resets = [event.event for event in batch].count(RESET_EVENT)
        self.batch, self.chunked, self.takes = batch, chunked, 1
        self.body_size = len(body)
        self.data = b"%X\r\n%b\r\n" % (len(body), body) if chunked else body
        return self.data

    def settle(self) -> None:
        """Add the current batch's takes to the pass's totals."""
        self.events += self.takes * len(self.batch)
        self.all_resets += self.takes * self.resets
        self.takes = 0

    def report(self, metrics: DeliveryCounter | None) -> None:
        self.settle()
        if metrics is not None and self.events:
            metrics.delivered(self.events, self.all_resets)


class Flusher:
    """The scheduled jobs of one runtime, run in passes after publishers yield.

    Create it in the gevent hub's thread, where the streams run.

    :param metrics: counts the events the passes write, once per pass.
    """

    def __init__(self, metrics: DeliveryCounter | None = None) -> None:
        import gevent
        from gevent.monkey import get_original

        self.spawn = gevent.spawn_raw
        #: The thread of the gevent hub the streams run in.
        self.thread: int = hub_thread(gevent.get_hub())
        self.ident: Callable[[], int] = get_original("_thread", "get_ident")
        self.jobs: list[Callable[[], None]] = []
        self.scheduled = False
        self.current = _Pass()
        self.metrics = metrics
        #: Passes run so far, for tests and benchmarks.
        self.passes = 0

    def add(self, job: Callable[[], None]) -> bool:
        if self.ident() != self.thread:
            return False  # a publisher in another OS thread: the stream wakes instead
        self.jobs.append(job)
        if not self.scheduled:
            self.scheduled = True
            # A greenlet, not a loop callback: a metrics backend may take a lock.
            self.spawn(self.run)
        return True

    def run(self) -> None:
        try:
            while self.jobs:
                jobs, self.jobs = self.jobs, []
                self.passes += 1
                self.current = done = _Pass(time.monotonic())
                for job in jobs:
                    try:
                        job()
                    except Exception:  # one stream's failure must not stop the rest
                        logger.exception("A direct write failed.")
                done.report(self.metrics)
        finally:
            self.current = _Pass()
            self.scheduled = False


class DirectWriter:
    """Writes one stream's events straight to its socket while nobody waits on them.

    It is the :class:`~flask_sse_push.brokers.handoff.Consumer` the stream gives
    its subscription.

    :param carrier: the socket and gunicorn's response object.
    :param flusher: the runtime's flusher, which runs the scheduled jobs and
        counts the events written.
    :param live: the stream, whose write times the send timeout watches.
    """

    __slots__ = (
        "_raw",
        "_counter",
        "_chunked",
        "_live",
        "_flusher",
        "unsent",
        "written_at",
    )

    def __init__(
        self,
        carrier: Carrier,
        flusher: Flusher,
        *,
        live: CarriedStream,
    ) -> None:
        self._raw: _socket.socket = raw_socket(carrier.sock)
        #: What counts the body's bytes for the access log (``sent``): gunicorn's
        #: response, or the parked stream once it owns the count.
        self._counter: t.Any = carrier.response
        self._chunked = is_chunked(carrier.response)
        self._live = live
        self._flusher = flusher
        #: The rest of a chunk the kernel did not take; it must be written,
        #: blocking, before anything else. ``None`` when there is none.
        self.unsent: bytes | None = None
        #: ``time.monotonic()`` of the pass that last wrote (0.0: none yet); the
        #: keepalive interval of a parked stream counts from it.
        self.written_at = 0.0

    @property
    def chunked(self) -> bool:
        """Whether the body is framed as HTTP/1.1 chunks."""
        return self._chunked

    def hand_over(self, raw: _socket.socket, counter: object) -> None:
        """Write to ``raw`` and count in ``counter.sent`` from now on: the stream
        parked, and owns its socket and its byte count."""
        self._raw = raw
        self._counter = counter
        self.written_at = time.monotonic()  # the first chunk was just written

    def defer(self, job: Callable[[], None]) -> bool:
        return self._flusher.add(job)

    def take(self, events: list[ServerSentEvent]) -> bool:
        # Runs once per stream per pass: a thousand streams make it the fan-out's
        # hot loop (bench/PROFILE-latency.md), so the common case is inline.
        if self._live.ending is not None:
            return True  # it ends now, dropping what it has not sent
        done = self._flusher.current
        if events is done.batch and self._chunked is done.chunked:
            done.takes += 1
            data = done.data
        else:
            data = done.frame(events, self._chunked)
        # What gunicorn's access log reports as the body size (%(B)s); inline,
        # not through _gunicorn_internals, to spare a call (its self-check covers it).
        self._counter.sent += done.body_size
        self.written_at = done.at
        if self.unsent is not None:  # a blocking write is finishing a chunk: queue behind it
            self.unsent += data
            return False
        try:
            sent = self._raw.send(data)
        except OSError:
            # Full (BlockingIOError), or the peer is gone and the blocking
            # write will fail and end the stream.
            sent = 0
        if sent < len(data):
            self.unsent = data[sent:]
            return False
        return True

    def send(self, data: bytes) -> bool:
        """Write ``data`` without blocking, counted as body bytes; what the kernel
        does not take is left in :attr:`unsent`. Return whether all of it went.

        :param data: one whole chunk, framed already if the body is chunked.
        """
        self.written_at = time.monotonic()
        if self.unsent is not None:
            self.unsent += data
            return False
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.unsent = data[sent:]
            return False
        return True

    def finish_chunk(self) -> bool:
        """Write what the kernel did not take, blocking; False if the socket failed.

        Runs in a greenlet that may wait: the stream's own, or a parked
        stream's short-lived one. It writes at most :data:`PIECE` bytes at a
        time and marks each piece's start, so the send timeout measures a lack
        of progress, not the size of what is left.
        """
        from gevent.socket import wait_write

        live = self._live
        raw = self._raw
        try:
            while self.unsent is not None:
                unsent, self.unsent = self.unsent, None
                view = memoryview(unsent)
                start = 0
                while start < len(view):
                    live.began_write()  # a piece: the send timeout bounds each one
                    end = min(start + PIECE, len(view))
                    while start < end:
                        try:
                            start += raw.send(view[start:end])
                        except BlockingIOError:
                            wait_write(raw.fileno())
        except OSError:
            return False
        finally:
            live.wrote()
        return True
