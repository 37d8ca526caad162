"""Turn a :class:`~flask_sse_push.brokers.Subscription` into response chunks.

This is the loop every SSE response runs: a first chunk at once, then batches of
encoded events, a keepalive comment whenever the source stays quiet for the
keepalive interval, and a clean end. It does no Flask work, so it costs nothing
per event beyond the queue and the write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import threading
import time
import typing as t

from .brokers.base import RESET_EVENT, Subscription
from .data import encode_data
from .encoding import encode_comment, encode_retry
from .event import ServerSentEvent
from .exceptions import SubscriptionClosed
from .servers.base import ThreadTask
from .sockets import PIECE

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .connections import Ending, LiveStream
    from .metrics import Metrics
    from .servers.base import FastWriter, Task

logger = logging.getLogger("flask_sse_push")

#: Jitter comes from the system's generator, which keeps no state: drawing it
#: never moves the app's (or a test's) seeded ``random``.
_JITTER = random.SystemRandom()

#: What a keepalive looks like on the wire: a comment, ignored by every client.
KEEPALIVE = encode_comment("keepalive").encode()

#: An item a user generator may yield: an event, its data, or its fields.
StreamItem: t.TypeAlias = "ServerSentEvent | str | t.Mapping[str, t.Any]"


def first_chunk(retry: int | None, keepalive: float, start_id: str | None = None) -> bytes:
    """The chunk sent before any event, so headers and ``onopen`` happen at once.

    Its first block ends with a ``: keepalive <ms>`` comment, ignored by
    ``EventSource``: it tells ``client.js`` how long the stream may stay silent
    before it can take the connection for dead.

    With ``start_id`` (:attr:`Subscription.start_id`) it also sets the client's
    last event id: an ``id:`` field in a block without data changes the last
    event ID string at dispatch without firing an event (WHATWG HTML, "dispatch
    the event", steps 1-2). So a stream that ends for any reason before its
    first event still leaves the client a cursor to resume from.
    """
    announce = f"keepalive {round(keepalive * 1000)}"
    if retry is not None:
        # One block: a comment line may sit in any block, and is ignored there.
        chunk = encode_retry(retry).removesuffix("\n") + encode_comment(announce)
    else:
        chunk = encode_comment(f"connected\n{announce}")
    if start_id is not None:
        chunk += f"id: {start_id}\n\n"
    return chunk.encode()


def closing_chunk(reason: str, retry: int | None) -> bytes:
    """The last chunk of a stream that the client should come back to."""
    chunk = encode_comment(f"closed: {reason}")
    if retry is not None:
        chunk += encode_retry(retry)
    return chunk.encode()


#: The event id a deliberately stopped stream leaves with its client. The
#: browser sends it back as ``Last-Event-ID`` on its one reconnect, and is
#: answered ``204``, which stops ``EventSource`` for good. No broker issues it.
STOP_ID = "flask-sse-push:stopped"


#: The ``retry:`` a stopped stream leaves with, in milliseconds: its client's
#: one reconnect (answered ``204``) comes at once instead of after the usual
#: few seconds, so the client is done within about this long.
STOP_RETRY = 100


def stop_chunk(reason: str) -> bytes:
    """The last chunk of a stream that is ended on purpose, for good.

    An ``id:`` line without data sets the client's last event id without firing
    an event (WHATWG HTML 9.2.6), so the reconnect that follows carries
    :data:`STOP_ID`; the ``retry:`` of :data:`STOP_RETRY` makes that reconnect,
    and so its ``204``, come at once. The browser client (``client.js``) stops
    on the id itself, without that reconnect.
    """
    return (
        encode_comment(f"closed: {reason}") + encode_retry(STOP_RETRY) + f"id: {STOP_ID}\n\n"
    ).encode()


def reconnect_retry(retry: int | None) -> int:
    """The ``retry:`` to end a stream with: the configured one, or 1 to 3 s.

    A random value keeps clients that were dropped together (one overflowing
    channel, a broker hiccup) from coming back together.
    """
    return retry if retry is not None else _JITTER.randint(1000, 3000)


def spread_retry(retry: int | None) -> int:
    """A ``retry:`` between one and three times the usual delay, for mass endings.

    Used when a whole worker lets its clients go (shutdown), so they reconnect
    spread out instead of all at once.
    """
    base = 1000 if retry is None else retry
    return _JITTER.randint(base, 3 * base)


def jittered_lifetime(lifetime: float | None) -> float | None:
    """Return 80 to 100 % of ``lifetime``, so clients connected together leave apart."""
    return None if lifetime is None else lifetime * _JITTER.uniform(0.8, 1.0)


def event_stream(body: BodyChunks) -> Iterator[bytes]:
    """Yield the bytes of an SSE response body, as the server writes them.

    This is the carrying side of a stream that keeps its greenlet or thread:
    what to send comes from ``body``. Each chunk is handed over in pieces of at
    most :data:`~flask_sse_push.sockets.PIECE` bytes, and the start of each is
    marked on the stream, so the send timeout measures a lack of progress,
    never the size of a write. Once the first chunk is written, a fast-path
    writer the server offered is given to the subscription. The subscription is
    closed when the generator ends, including when the server closes it because
    the client went away (:meth:`BodyChunks.release`).
    """
    live = body.live
    try:
        if not body.opened:
            yield body.opening()
            # Only now: the server has written the headers and the first chunk.
            body.hand_to_writer()
        # A method call, not a for loop over ``body``: Python runs a method's
        # frame in the generator's own C frame, while ``for`` would call
        # ``__next__`` from C, one C frame deeper. Every stream's greenlet waits
        # in there, and gevent keeps a copy of its C stack per waiting stream.
        while (chunk := body.next_chunk()) is not None:
            if len(chunk) <= PIECE:
                live.began_write()
                yield chunk
            else:
                yield from _pieces(chunk, live)
        live.finish()
    finally:
        body.release()


def _pieces(chunk: bytes, live: LiveStream) -> Iterator[bytes]:
    for start in range(0, len(chunk), PIECE):
        live.began_write()
        yield chunk[start : start + PIECE]


def _closed_reason(subscription: Subscription) -> str | None:
    """Why the source ended ``subscription`` already, if it did; it is about to close."""
    try:
        subscription.get(0)
    except SubscriptionClosed as closed:
        return None if closed.reason == "closed" else closed.reason
    except Exception:  # the stream is ending anyway; the reason is best effort
        return None
    return None


class BodyChunks:
    """What a stream sends after its first chunk: what the stream *means*.

    An iterator of chunks. Every batch of ready events becomes one chunk, so a
    client that fell behind catches up in one write; a keepalive comment is
    sent whenever the source stays quiet for ``keepalive`` seconds; and the
    stream ends when the source ends it, when its lifetime is up, or when it is
    ended from outside (``live.ending``), with the final bytes that fit. (A
    small object rather than a generator: it is kept for every open stream.)

    :param retry: a stream that ends in a way the client should recover from
        always ends with a ``retry:``: this value, or a random 1 to 3 s when it
        is ``None``.
    :param lifetime: seconds after which the stream ends, between two events,
        with a ``retry:`` hint; the client then resumes from its last event id.
    :param metrics: counts the events sent and the ``reset`` events among them.
    """

    __slots__ = (
        "_subscription",
        "live",
        "keepalive",
        "_retry",
        "deadline",
        "_metrics",
        "_done",
        "opened",
    )

    def __init__(
        self,
        subscription: Subscription,
        live: LiveStream,
        *,
        keepalive: float,
        retry: int | None = None,
        lifetime: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._subscription = subscription
        #: The stream's entry in the registry of live streams.
        self.live = live
        #: Seconds of quiet before a keepalive comment is due.
        self.keepalive = keepalive
        self._retry = retry
        #: ``time.monotonic()`` when the lifetime is up, or ``None``.
        self.deadline = None if lifetime is None else time.monotonic() + lifetime
        self._metrics = metrics
        self._done = False
        #: Whether :meth:`opening` was taken.
        self.opened = False

    def __iter__(self) -> BodyChunks:
        return self

    def __next__(self) -> bytes:
        chunk = self.next_chunk()
        if chunk is None:
            raise StopIteration
        return chunk

    def chunks(self) -> Iterator[bytes]:
        """The whole body, first chunk included, for a server that iterates it
        (:func:`event_stream`)."""
        return event_stream(self)

    def opening(self) -> bytes:
        """The first chunk (:func:`first_chunk`), its write marked on the stream."""
        self.opened = True
        self.live.began_write()
        return first_chunk(self._retry, self.keepalive, self._subscription.start_id)

    def hand_to_writer(self) -> bool:
        """Give the subscription the server's fast-path writer, if there is one;
        return whether it took it (else the stream forgets the writer)."""
        writer = self.live.writer
        if writer is None:
            return False
        if self._subscription.set_consumer(writer):
            return True
        self.live.drop_writer()
        return False

    def can_park(self) -> bool:
        """Whether the stream can wait without a greenlet: it has a fast-path writer
        and its subscription can wait without a reader
        (:meth:`~flask_sse_push.brokers.Subscription.park`)."""
        return self.live.writer is not None and self._subscription.parks

    def park(self, wake: Callable[[], None]) -> bool:
        """Wait without a reader until ``wake()``; False if something is ready now
        (see :meth:`~flask_sse_push.brokers.Subscription.park`)."""
        return self._subscription.park(wake)

    def poll_chunk(self, keepalive_due: bool) -> bytes | None:
        """Return the next chunk to send without waiting: ``b""`` when there is
        nothing to send yet, ``None`` once the stream ended.

        The parked counterpart of :meth:`next_chunk`: the caller finishes any
        partial direct write first, and says whether the keepalive interval has
        passed since the last write.
        """
        if self._done:
            return None
        live = self.live
        if live.ending is None:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                live.learned("lifetime")
                return self._last(closing_chunk("lifetime", reconnect_retry(self._retry)))
            try:
                batch = self._subscription.get(0)
            except SubscriptionClosed as closed:
                if live.ending is None:
                    return self._closed(closed)
            else:
                if live.ending is None:
                    if batch:
                        return self._chunk(batch)
                    return KEEPALIVE if keepalive_due else b""
        return self._ending(live.ending)

    def release(self) -> None:
        """End the stream's use of its subscription, however it ended; learn why.

        Runs once the last chunk is written, or the client is gone.
        """
        live = self.live
        subscription = self._subscription
        if live.writer is not None:
            subscription.set_consumer(None)
        if live.reason is None or live.reason == "send_timeout":
            # A stalled client may have overflowed its queue before its write
            # was cut: the overflow is why it ended.
            live.learned(_closed_reason(subscription) or live.reason)
        subscription.close()

    def next_chunk(self) -> bytes | None:
        """Return the next chunk to send, waiting for it; ``None`` once the stream ended."""
        # Every wait (the subscription's get, finishing a direct write) happens in
        # this frame, not in a helper: a waiting stream's greenlet then keeps one
        # frame fewer, which is memory per idle stream. The helpers never wait.
        if self._done:
            return None
        live = self.live
        keepalive = self.keepalive
        while live.ending is None:
            live.wrote()
            timeout = self._wait_time()
            if timeout is None:
                live.learned("lifetime")
                return self._last(closing_chunk("lifetime", reconnect_retry(self._retry)))
            ended: SubscriptionClosed | None = None
            try:
                batch = self._subscription.get(timeout)
            except SubscriptionClosed as closed:
                ended, batch = closed, []
            # A direct write left part of a chunk: it goes first, whole.
            writer = self._unsent_writer()
            if writer is not None and not writer.finish_chunk():
                return self._end()  # the client is gone
            if live.ending is not None:
                break
            if ended is not None:
                return self._closed(ended)
            if batch:
                return self._chunk(batch)
            if writer is not None or timeout < keepalive:
                # Woken to finish that chunk, or the lifetime is up rather than
                # the keepalive interval: no keepalive is due.
                continue
            return KEEPALIVE
        return self._ending(live.ending)

    def _wait_time(self) -> float | None:
        """Seconds to wait for events: the keepalive interval, or less if the
        lifetime ends first; ``None`` once the lifetime is up."""
        if self.deadline is None:
            return self.keepalive
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        return min(self.keepalive, remaining)

    def _unsent_writer(self) -> FastWriter | None:
        """The stream's direct writer if a write of it left part of a chunk unsent."""
        writer = self.live.writer
        if writer is None or writer.unsent is None:
            return None
        return writer

    def _chunk(self, batch: list[ServerSentEvent]) -> bytes:
        """One chunk of every ready event, counted in the metrics."""
        if len(batch) == 1:
            first = batch[0]
            chunk = first.encode()
            resets = 1 if first.event == RESET_EVENT else 0
        else:
            chunk = b"".join([event.encode() for event in batch])
            resets = [event.event for event in batch].count(RESET_EVENT)
        if self._metrics is not None:
            self._metrics.delivered(len(batch), resets)
        return chunk

    def _closed(self, ended: SubscriptionClosed) -> bytes | None:
        """The last chunk of a stream its source ended: a ``retry:`` hint if the
        client should come back, the stop id if it must not, else nothing."""
        if ended.reason != "closed":  # "closed" is the server closing it
            self.live.learned(ended.reason)
        if ended.reconnect:
            return self._last(closing_chunk(ended.reason, reconnect_retry(self._retry)))
        if ended.stop:
            return self._last(stop_chunk(ended.reason))
        return self._end()

    def _ending(self, ending: Ending) -> bytes | None:
        """The last chunk of a stream ended from outside (revoked, shut down, ...)."""
        if ending.final:
            return self._last(ending.final)
        return self._end()

    def _last(self, chunk: bytes) -> bytes:
        self._done = True
        return chunk

    def _end(self) -> bytes | None:
        """Mark the stream ended; returns ``None``, :meth:`next_chunk`'s "no more"."""
        self._done = True
        return None


def to_event(item: StreamItem, dumps: Callable[[t.Any], str] = json.dumps) -> ServerSentEvent:
    """Convert an item a user generator yielded into a :class:`ServerSentEvent`.

    :param dumps: serializer for non-``str`` data in a mapping.
    :raises TypeError: the item is of another type, or a mapping has unknown keys.
    """
    if isinstance(item, ServerSentEvent):
        return item
    if isinstance(item, str):
        return ServerSentEvent(item)
    if isinstance(item, t.Mapping):
        unknown = set(item) - {"data", "event", "id", "retry"}
        if unknown:
            raise TypeError(
                f"A streamed mapping may only have the keys data, event, id and retry;"
                f" got also {sorted(unknown)}."
            )
        fields = dict(item)
        fields["data"] = encode_data(fields.get("data", ""), dumps)
        return ServerSentEvent(**fields)
    raise TypeError(
        "A stream source must yield ServerSentEvent, str or a mapping of its fields,"
        f" not {type(item).__name__}."
    )


def check_source(source: object) -> None:
    """Refuse, at once, a stream source that :class:`GeneratorSubscription` cannot iterate.

    The source runs in a thread or greenlet of its own, with no event loop, so
    only a plain (synchronous) iterable will do.

    :raises TypeError: ``source`` is an async iterable (an ``async def``
        generator), a generator function not called, one event (a ``str``,
        ``bytes``, a mapping or a :class:`ServerSentEvent`), or not iterable at
        all; the message says what to pass instead.
    """
    kind = type(source).__name__
    if hasattr(source, "__aiter__"):
        raise TypeError(
            f"sse.stream() cannot run an async iterable ({kind}): it iterates its source in a"
            " thread or greenlet, without an event loop. Write the generator with `def` instead"
            " of `async def`, and block in it with time.sleep() or a blocking queue.get()."
        )
    if isinstance(source, (str, bytes, bytearray, t.Mapping, ServerSentEvent)):
        raise TypeError(
            f"sse.stream() takes an iterable of events, not one {kind}: wrap a single event"
            " in a list (sse.stream([event])) or yield it from a generator."
        )
    if not hasattr(source, "__iter__"):
        hint = " Call the generator function: sse.stream(ticks()), not sse.stream(ticks)."
        raise TypeError(
            f"sse.stream() needs an iterable of events, such as a generator, not {kind}."
            + (hint if callable(source) else "")
        )


class GeneratorSubscription(Subscription):
    """A :class:`Subscription` fed by an application's own iterable.

    The iterable runs in its own thread or greenlet, so one that blocks between
    items does not hold back keepalives. It starts on the first :meth:`get`.
    After :meth:`close`, a source in a greenlet is killed where it blocks
    (``GreenletExit`` is raised there, so its ``finally`` runs at once); a source
    in an OS thread cannot be, and is closed at its next item.

    :param source: yields :data:`StreamItem` values.
    :param dumps: serializer for non-``str`` data in mappings.
    :param buffer: items the source may run ahead of the client.
    :param spawn: runs the source and returns a :class:`~flask_sse_push.servers.base.Task`
        (the server's :meth:`~flask_sse_push.servers.base.Server.spawn`); by
        default, an OS thread.
    """

    def __init__(
        self,
        source: Iterable[StreamItem],
        *,
        dumps: Callable[[t.Any], str] = json.dumps,
        buffer: int = 16,
        spawn: Callable[[Callable[[], None]], Task] | None = None,
    ) -> None:
        self._source = source
        self._dumps = dumps
        self._queue: queue.Queue[object] = queue.Queue(buffer)
        self._stop = threading.Event()
        self._spawn = spawn
        self._task: Task | None = None
        self._ended: SubscriptionClosed | None = None

    def _offer(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.25)
            except queue.Full:
                continue
            return True
        return False

    def _pump(self) -> None:
        outcome: object = SubscriptionClosed("end", reconnect=False)
        iterator: Iterator[StreamItem] | None = None
        started = False
        try:
            iterator = iter(self._source)
            for item in iterator:
                if not self._offer(to_event(item, self._dumps)):
                    break
                started = True
        except Exception:
            if started:
                logger.exception("Stream source raised; ending the stream, the client may resume.")
                outcome = SubscriptionClosed("source error")
            else:
                # It would fail the same way on every reconnect, every 1-3 s,
                # forever: the stop id makes the client's reconnect a 204.
                logger.exception(
                    "Stream source raised before its first event; stopping the client for good"
                    " (its reconnect is answered 204)."
                )
                outcome = SubscriptionClosed("source error", stop=True)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self._offer(outcome)

    def get(self, timeout: float | None = None) -> list[ServerSentEvent]:
        if self._ended is not None:
            raise self._ended
        if self._task is None and not self._stop.is_set():
            if self._spawn is not None:
                self._task = self._spawn(self._pump)
            else:
                self._task = ThreadTask(self._pump)
        batch: list[ServerSentEvent] = []
        try:
            item = self._queue.get(timeout=timeout)
            while True:
                if isinstance(item, SubscriptionClosed):
                    self._ended = item
                    break
                assert isinstance(item, ServerSentEvent)
                batch.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._ended is not None and not batch:
            raise self._ended
        return batch

    def close(self) -> None:
        self._stop.set()
        # Wake a reader blocked in get(); if the queue is full it is not blocked.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(SubscriptionClosed("closed", reconnect=False))
        task = self._task
        if task is not None:
            task.cancel()
