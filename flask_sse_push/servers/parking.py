"""Parked streams: broker-backed streams that wait without a greenlet.

Under the package's worker class
(:class:`~flask_sse_push.servers.gunicorn.GeventWorker`), once a stream has
written its first chunk and has nothing more to send, the worker's request
greenlet returns and the stream is *parked*: what is left of it is a
:class:`ParkedStream` in the worker's :class:`ParkingTable` (its socket, its
body source with the subscription and cursor, its direct writer with the
framing and byte count, and the fields of its access-log line), and its
subscription waits without a reader
(:meth:`~flask_sse_push.brokers.Subscription.park`). Nothing runs for it while
it waits:

- the fan-out writes events onto its socket (:mod:`.fastpath`);
- keepalives and the end of its lifetime come from one heap of timers for the
  whole table, not a timer per stream;
- a hang-up, a revoke or a shutdown ends its subscription, which wakes it;
- a write the kernel does not take whole wakes it too.

A woken stream is moved on in one greenlet that runs every woken stream in
turn and never blocks (:meth:`ParkedStream.step`). Only a stream with a write
to finish (a slow reader) gets a greenlet of its own, for as long as that
write lasts, and parks again after it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
import typing as t

from ._gunicorn_internals import hub_thread

if t.TYPE_CHECKING:
    import _socket
    from collections.abc import Callable

    from .base import ParkableSource, StreamBody
    from .fastpath import DirectWriter

logger = logging.getLogger("flask_sse_push")

#: The last chunk of a chunked body (RFC 9112, 7.1).
LAST_CHUNK = b"0\r\n\r\n"

#: Longest sleep of the timer greenlet, in seconds: it looks again at least this often.
TIMER_TICK = 1.0


class AccessLine(t.Protocol):
    """Writes a parked stream's access-log line when it ends (the server's part)."""

    def write(self, sent: int) -> None:
        """Log the response as ended now, with ``sent`` body bytes."""


class ParkedStream:
    """One stream the worker's request greenlet has let go.

    Its methods are the only writers of its fields, and they run in the hub's
    thread: in the table's greenlet, or in the stream's own short-lived one
    while it finishes a write.

    :param body: the response body, closed when the stream ends.
    :param source: what makes the chunks (the body's source).
    :param writer: the direct writer, now writing to ``sock``.
    :param sock: the client socket, non-blocking, owned from now on.
    :param sent: body bytes written so far (gunicorn's count), for the access log.
    :param access: writes the access-log line at the end, or ``None``.
    """

    __slots__ = (
        "table",
        "body",
        "source",
        "writer",
        "sock",
        "sent",
        "access",
        "timer_at",
        "state",
        "ended",
    )

    def __init__(
        self,
        table: ParkingTable,
        body: StreamBody,
        source: ParkableSource,
        writer: DirectWriter,
        sock: _socket.socket,
        sent: int,
        access: AccessLine | None,
    ) -> None:
        self.table = table
        self.body = body
        self.source = source
        self.writer = writer
        self.sock = sock
        self.sent = sent
        self.access = access
        #: When this stream's entry in the table's timer heap is due, or ``None``.
        self.timer_at: float | None = None
        #: ``"parked"``, ``"ready"`` (to be stepped by the table), ``"awake"``
        #: (stepping, or finishing a write in a greenlet), or ``"closed"``.
        self.state = "awake"
        #: Whether the body's last chunk was given to the writer.
        self.ended = False

    def wake(self) -> None:
        """Have the table move this stream on soon; from any thread (see
        :meth:`~flask_sse_push.brokers.Subscription.park`)."""
        self.table.ready(self)

    def queue(self) -> bool:
        """Mark a parked stream as waiting to be stepped; False if it is not parked
        (it is stepping or writing, and looks again before it parks)."""
        if self.state != "parked":
            return False
        self.state = "ready"
        return True

    def resume(self) -> bool:
        """Mark a queued stream as stepping; False if it was closed meanwhile."""
        if self.state != "ready":
            return False
        self.state = "awake"
        return True

    def timer(self) -> float:
        """When the stream's keepalive is due, or its lifetime ends, if sooner."""
        source = self.source
        when = self.writer.written_at + source.keepalive
        return when if source.deadline is None else min(when, source.deadline)

    def set_timer(self, when: float) -> bool:
        """Take ``when`` as the time of the stream's entry in the timer heap; False
        if its current entry comes first (and re-arms it when it comes up)."""
        if self.timer_at is not None and self.timer_at <= when:
            return False
        self.timer_at = when
        return True

    def timer_came(self, when: float) -> bool:
        """Whether the heap entry for ``when`` is the stream's current one, and the
        stream waits parked; the entry is then spent."""
        if self.timer_at != when:
            return False  # superseded by a later entry
        self.timer_at = None
        return self.state == "parked"

    def step(self) -> bool:
        """Move the stream on without blocking, until it parks again or ends.

        :returns: True if a write must be finished first, blocking
            (:meth:`carry`); False once the stream parked or ended.
        """
        source = self.source
        writer = self.writer
        try:
            while writer.unsent is None:
                if self.ended:
                    self.close()
                    return False
                due = time.monotonic() >= writer.written_at + source.keepalive
                chunk = source.poll_chunk(due)
                if chunk is None:
                    self.ended = True
                    source.live.finish()
                    if writer.chunked:
                        writer.send(LAST_CHUNK)
                    continue
                if not chunk:
                    # Parked first: a wake may come as soon as park() registers it.
                    self.state = "parked"
                    if source.park(self.wake):
                        self.table.arm(self)
                        return False
                    self.state = "awake"
                    continue
                self.sent += len(chunk)
                writer.send(b"%X\r\n%b\r\n" % (len(chunk), chunk) if writer.chunked else chunk)
        except OSError:  # the client is gone
            self.close()
            return False
        return True

    def carry(self) -> None:
        """Finish the writes the kernel did not take, blocking, then step on.

        Runs in a greenlet of its own, for as long as the client is slow.
        """
        try:
            while self.writer.finish_chunk():
                if not self.step():
                    return
            self.close()  # the socket failed: the client is gone
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the stream: release its subscription, report it, close the socket."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.table.forget(self)
        try:
            self.source.release()
            self.body.close()
        finally:
            if self.access is not None:
                self.access.write(self.sent)
            self.sock.close()


class ParkingTable:
    """One worker's parked streams, their timers, and the greenlet that steps the woken.

    Create it in the gevent hub's thread, where the streams run.
    """

    def __init__(self) -> None:
        import gevent
        from gevent.event import Event
        from gevent.monkey import get_original

        self._spawn = gevent.spawn_raw
        self._hub = gevent.get_hub()
        self._thread = hub_thread(self._hub)
        self._ident: Callable[[], int] = get_original("_thread", "get_ident")
        self.streams: dict[ParkedStream, None] = {}
        self._ready: list[ParkedStream] = []
        self._stepping = False
        #: ``(when, order, stream)``: a stream's entry is current while its
        #: ``timer_at`` is ``when``; older ones are skipped when they come up.
        self._timers: list[tuple[float, int, ParkedStream]] = []
        self._order = itertools.count()
        self._timer_running = False
        self._timer_due = float("inf")
        self._poke = Event()

    def __len__(self) -> int:
        return len(self.streams)

    def parked(self) -> int:
        """How many streams wait right now without any greenlet."""
        return sum(1 for stream in self.streams if stream.state == "parked")

    def adopt(self, stream: ParkedStream) -> None:
        """Take ``stream`` (awake), and step it in the calling greenlet, which may block."""
        self.streams[stream] = None
        while stream.step():
            if not stream.writer.finish_chunk():
                stream.close()
                return

    def forget(self, stream: ParkedStream) -> None:
        self.streams.pop(stream, None)

    def ready(self, stream: ParkedStream) -> None:
        """Queue a woken ``stream`` to be stepped; from any thread."""
        if self._ident() != self._thread:
            self._hub.loop.run_callback_threadsafe(self.ready, stream)
            return
        if not stream.queue():
            return
        self._ready.append(stream)
        if not self._stepping:
            self._stepping = True
            # A greenlet, not a loop callback: a step may take the broker's lock.
            self._spawn(self._step_ready)

    def _step_ready(self) -> None:
        try:
            while self._ready:
                batch, self._ready = self._ready, []
                for stream in batch:
                    if not stream.resume():
                        continue
                    try:
                        if stream.step():
                            self._spawn(stream.carry)
                    except Exception:  # one stream's failure must not stop the rest
                        logger.exception("A parked stream failed; it is closed.")
                        stream.close()
        finally:
            self._stepping = False

    def arm(self, stream: ParkedStream) -> None:
        """Have ``stream`` woken when its keepalive is due or its lifetime ends."""
        when = stream.timer()
        if not stream.set_timer(when):
            return
        heapq.heappush(self._timers, (when, next(self._order), stream))
        if not self._timer_running:
            self._timer_running = True
            self._spawn(self._run_timers)
        elif when < self._timer_due:
            self._poke.set()

    def _run_timers(self) -> None:
        timers = self._timers
        try:
            while timers:
                now = time.monotonic()
                while timers and timers[0][0] <= now:
                    when, _, stream = heapq.heappop(timers)
                    if stream.timer_came(when):
                        self._fire(stream, now)
                self._timer_due = timers[0][0] if timers else now + TIMER_TICK
                self._poke.clear()
                self._poke.wait(min(TIMER_TICK, max(0.0, self._timer_due - time.monotonic())))
        finally:
            self._timer_running = False

    def _fire(self, stream: ParkedStream, now: float) -> None:
        """A stream's timer came up: wake it if its keepalive or lifetime is due."""
        if stream.timer() > now:
            self.arm(stream)  # data went out since it was armed: not due yet
        else:
            self.ready(stream)

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every stream to end (a shutdown ends
        them); then close the rest. Return how many were closed unfinished."""
        import gevent

        deadline = time.monotonic() + timeout
        while self.streams and time.monotonic() < deadline:
            gevent.sleep(0.05)
        left = list(self.streams)
        for stream in left:
            stream.close()
        return len(left)
