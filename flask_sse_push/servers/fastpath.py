"""Direct writes: events go onto idle clients' sockets in one pass, without waking them.

Under gunicorn's gevent worker every stream is a greenlet waiting in
:meth:`~flask_sse_push.brokers.Subscription.get`. Waking each one to hand gunicorn
an event costs a switch into the greenlet and back; at a thousand clients that
is most of a broadcast's time, and it is paid again for every event. Instead, a
stream gives its subscription a :class:`DirectWriter`
(:meth:`~flask_sse_push.brokers.Subscription.set_direct`). The subscription
schedules a job when events arrive for a waiting stream; the jobs run in one
pass per process as soon as the publisher yields, and write each stream's
events with a single non-blocking ``send``, framed exactly as gunicorn frames a
chunk. Streams that get the same events share one encoding per pass.

A stream's greenlet takes over again only when the kernel does not take a whole
chunk: it wakes, finishes that chunk with an ordinary blocking write (watched by
the send timeout like any other), and carries on with the usual path. Chunks
written either way are whole, so the two never interleave inside one.
"""

from __future__ import annotations

import logging
import operator
import os
import time
import typing as t

from .brokers.base import RESET_EVENT

if t.TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Mapping

    from .connections import LiveStream
    from .event import ServerSentEvent
    from .metrics import Metrics

logger = logging.getLogger("flask_sse_push")


def direct_socket(environ: Mapping[str, t.Any]) -> t.Any | None:
    """Return gunicorn's socket for a request whose stream may be written directly.

    That is a plain-text ``GET`` over HTTP/1.x on gunicorn's gevent worker,
    speaking HTTP (not the uwsgi protocol). TLS sockets, HTTP/2 streams and
    every other server get ``None``, and the stream writes through the server.
    """
    if environ.get("REQUEST_METHOD") != "GET":
        return None
    if environ.get("SERVER_PROTOCOL") not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    if not str(environ.get("SERVER_SOFTWARE", "")).startswith("gunicorn"):
        return None
    sock = environ.get("gunicorn.socket")
    kind = type(sock)
    # Exactly gevent's socket: its SSLSocket subclass encrypts in send().
    if kind.__name__ != "socket" or not kind.__module__.startswith("gevent."):
        return None
    if not hasattr(sock, "_sock"):
        return None
    from .server import gunicorn_worker

    worker = gunicorn_worker()
    if worker is None or getattr(getattr(worker, "cfg", None), "protocol", "http") != "http":
        return None
    return sock


class _Pass:
    """One run of the scheduled jobs: what it encoded, and what it delivered.

    Streams that get the same events usually get the very same list (the
    memory broker hands one list to a whole channel), or lists of the very same
    event objects; either way they are encoded and framed once per pass.
    """

    __slots__ = ("batch", "chunked", "data", "resets", "delivered")

    def __init__(self) -> None:
        self.batch: list[ServerSentEvent] = []
        self.chunked = False
        self.data = b""
        self.resets = 0
        #: Deliveries per metrics object, reported once at the end of the pass.
        self.delivered: dict[Metrics, list[int]] = {}

    def frame(self, batch: list[ServerSentEvent], chunked: bool) -> bytes:
        previous = self.batch
        if chunked is self.chunked and (
            batch is previous
            or (len(batch) == len(previous) and all(map(operator.is_, batch, previous)))
        ):
            return self.data
        if len(batch) == 1:
            body = batch[0].encode()
            self.resets = 1 if batch[0].event == RESET_EVENT else 0
        else:
            body = b"".join([event.encode() for event in batch])
            self.resets = [event.event for event in batch].count(RESET_EVENT)
        self.batch, self.chunked = batch, chunked
        self.data = b"%X\r\n%b\r\n" % (len(body), body) if chunked else body
        return self.data

    def count(self, metrics: Metrics, events: int) -> None:
        totals = self.delivered.get(metrics)
        if totals is None:
            totals = self.delivered[metrics] = [0, 0]
        totals[0] += events
        totals[1] += self.resets

    def report(self) -> None:
        for metrics, (events, resets) in self.delivered.items():
            metrics.delivered(events, resets)


class _Flusher:
    """The scheduled jobs of one process, run in passes after publishers yield."""

    def __init__(self) -> None:
        import gevent
        from gevent.monkey import get_original

        self.pid = os.getpid()
        self.spawn = gevent.spawn_raw
        #: The thread of the gevent hub the streams run in.
        self.thread: int = gevent.get_hub().thread_ident
        self.ident: Callable[[], int] = get_original("_thread", "get_ident")
        self.jobs: list[Callable[[], None]] = []
        self.scheduled = False
        self.current = _Pass()
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
                self.current = done = _Pass()
                for job in jobs:
                    try:
                        job()
                    except Exception:  # one stream's failure must not stop the rest
                        logger.exception("A direct write failed.")
                done.report()
        finally:
            self.current = _Pass()
            self.scheduled = False


_flusher: _Flusher | None = None


def flusher() -> _Flusher:
    """Return this process's flusher (a forked worker gets its own).

    Call it first from the gevent hub's thread, where the streams run.
    """
    global _flusher
    current = _flusher
    if current is None or current.pid != os.getpid():
        current = _flusher = _Flusher()
    return current


class DirectWriter:
    """Writes one stream's events straight to its socket while its greenlet waits.

    It is the :class:`~flask_sse_push.brokers.DirectSink` the stream gives
    its subscription.

    :param sock: gunicorn's (gevent) socket for the request.
    :param chunked: frame each write as an HTTP/1.1 chunk, as gunicorn does for
        an HTTP/1.1 response without a length.
    """

    __slots__ = ("_sock", "_raw", "_chunked", "_live", "_metrics", "_flusher", "unsent")

    def __init__(
        self,
        sock: t.Any,
        *,
        chunked: bool,
        live: LiveStream | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._sock = sock
        self._raw: socket.socket = sock._sock
        self._chunked = chunked
        self._live = live
        self._metrics = metrics
        self._flusher = flusher()
        #: The rest of a chunk the kernel did not take; the stream's greenlet
        #: must write it before anything else. ``None`` when there is none.
        self.unsent: bytes | None = None

    def schedule(self, job: Callable[[], None]) -> bool:
        return self._flusher.add(job)

    def write(self, events: list[ServerSentEvent]) -> bool:
        live = self._live
        if live is not None and live.ending is not None:
            return True  # it ends now, dropping what it has not sent
        done = self._flusher.current
        data = done.frame(events, self._chunked)
        if self._metrics is not None:
            done.count(self._metrics, len(events))
        if self.unsent is not None:  # the greenlet is finishing a chunk: queue behind it
            self.unsent += data
            return False
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # The peer is gone; the greenlet's own write will fail and end it.
            sent = 0
        if sent < len(data):
            self.unsent = data[sent:]
            return False
        return True

    def finish_chunk(self) -> bool:
        """Write what the kernel did not take, blocking; False if the socket failed.

        Runs in the stream's own greenlet, which the send timeout watches.
        """
        live = self._live
        try:
            while self.unsent is not None:
                unsent, self.unsent = self.unsent, None
                if live is not None:
                    live.write_started = time.monotonic()
                self._sock.sendall(unsent)
        except OSError:
            return False
        finally:
            if live is not None:
                live.write_started = None
        return True
