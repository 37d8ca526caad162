"""The seam between a stream and the server that carries it.

A stream needs a handful of answers from its server: the client's socket, if the
server exposes one; whether the client has gone; how to run an application's
source so that it can be stopped; when the server starts to stop; and how many
streams it can hold while still answering ordinary requests. :class:`Server`
asks every question once, with the answers of a server that says nothing (the
plain fallback). One subclass per server family, in this subpackage, gives the
answers it knows; nothing outside this subpackage knows a particular server.

:class:`StreamBody` is the response body every stream returns. A server that
owns the framing and the byte count of the response (this package's gunicorn
worker class) may :meth:`~StreamBody.attach` a carrier to it (an object only
that server's :meth:`Server.fast_writer` understands), which
lets the fan-out write events for a waiting stream itself. Only the body that
reaches the server unwrapped can be attached to: a middleware that wraps it
(compression, for one) leaves the stream on the ordinary path.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..sockets import SocketLike

logger = logging.getLogger("flask_sse_push")


class Task(t.Protocol):
    """A running application source, as :meth:`Server.spawn` returns it."""

    def cancel(self) -> None:
        """Stop the source as soon as the server allows; safe from any thread."""


class CarriedStream(t.Protocol):
    """What a fast-path writer needs of the stream it writes for (the runtime's
    :class:`~flask_sse_push.connections.LiveStream`): whether it is ending, and
    where its blocking writes start and stop, which the send timeout watches."""

    @property
    def ending(self) -> object | None:
        """Why the stream is being ended from outside; ``None`` while it is not."""

    def began_write(self) -> None:
        """Mark the start of a blocking write of at most
        :data:`~flask_sse_push.sockets.PIECE` bytes."""

    def wrote(self) -> None:
        """Mark that no blocking write is under way."""

    @property
    def writer(self) -> FastWriter | None:
        """The fast-path writer the server offered, if the stream kept it."""

    def finish(self) -> None:
        """Mark that the body ended by itself, its last write done."""

    def moved_to(self, socket: SocketLike) -> None:
        """Watch and cut ``socket`` from now on (same descriptor, new object)."""


class DeliveryCounter(t.Protocol):
    """Where a fast-path writer counts what it wrote (the runtime's metrics)."""

    def delivered(self, count: int, resets: int = 0) -> None:
        """``count`` events went to one client, ``resets`` of them ``reset`` events."""


class FastWriter(t.Protocol):
    """What a stream's subscription may write waiting events through.

    It is the :class:`~flask_sse_push.brokers.handoff.Consumer` the stream hands
    its subscription, plus what the stream itself needs to finish a partial write.
    """

    #: The rest of a chunk the kernel did not take, or ``None``.
    unsent: bytes | None

    def defer(self, job: Callable[[], None]) -> bool: ...

    def take(self, events: list[t.Any]) -> bool: ...

    def finish_chunk(self) -> bool: ...


class Attachable(t.Protocol):
    """What a stream body hands a server's carrier to."""

    def attach(self, carrier: object) -> None: ...


class ThreadTask:
    """A source in an OS thread: it cannot be stopped, only told to stop."""

    __slots__ = ("thread",)

    def __init__(self, target: Callable[[], None]) -> None:
        self.thread = threading.Thread(target=target, name="flask_sse_push-source", daemon=True)
        self.thread.start()

    def cancel(self) -> None:
        """A thread ends at the source's next item, when the source checks its stop flag."""


class Server:
    """What the delivery runtime needs from the server: the plain fallback.

    The fallback knows no socket, cannot tell that a client left before a write
    fails, runs sources in threads, and sets no capacity.
    """

    #: A name for logs and warnings.
    name = "an unrecognized WSGI server"
    #: Whether every open stream holds one of the server's OS threads.
    threaded = False
    #: How to let the server hold more connections, for warnings.
    more_room = "give the server more threads or connections"
    #: Whether a stream that ended by itself has its connection shut down at once
    #: (so the reconnect may land on another worker). Not where the server may
    #: still hold unsent bytes of the response when it closes the body.
    cut_when_finished = True

    def threads(self) -> int | None:
        """Return how many requests the server handles at once, if it is bounded by threads."""
        return None

    def capacity(self) -> int | None:
        """Return how many streams a worker can hold while ordinary requests still get
        through; ``None`` when the server sets no bound."""
        threads = self.threads()
        if threads is None or not self.threaded:
            return None
        return max(0, threads - thread_headroom(threads))

    def socket(self, environ: t.Mapping[str, t.Any]) -> SocketLike | None:
        """Return the client's TCP socket for an HTTP/1.x request, or ``None``."""
        return None

    def gone_check(self, environ: t.Mapping[str, t.Any]) -> Callable[[], bool] | None:
        """Return a cheap check that the client of this request has left, if the server has one."""
        return None

    def parked(self) -> int:
        """Return how many streams wait right now without a greenlet or thread of their own."""
        return 0

    def fast_writer(
        self, carrier: object, live: CarriedStream, metrics: DeliveryCounter | None
    ) -> FastWriter | None:
        """Return a writer for the fast path over ``carrier``, if this server made it.

        :param live: the stream; the writer marks its blocking writes on it.
        :param metrics: gets ``delivered(count, resets)`` for what the writer writes.
        """
        return None

    def spawn(self, target: Callable[[], None]) -> Task:
        """Run an application's source so that :meth:`Task.cancel` stops it as soon as possible."""
        return ThreadTask(target)

    def watch_shutdown(
        self, callback: Callable[[], None], open_streams: Callable[[], int] | None = None
    ) -> None:
        """Have ``callback`` run (in a signal handler) when the server starts to stop.

        :param open_streams: how many streams are still open; a server that
            exits as soon as the callback returns waits (briefly) for them to
            write their last bytes.
        """

    def refusal(self) -> str | None:
        """Return why no stream can run on this server as it is configured, and how to
        fix it; ``None`` when streams can run. Logged once; every stream is then
        answered ``200`` with ``retry:``."""
        return None

    def shutdown_note(self) -> str | None:
        """Return what bounds a shutdown with open streams, where the server gives the
        application no way to learn of it; logged once at startup."""
        return None

    def stopping(self) -> bool:
        """Return whether the server has started to stop; polled by the monitor."""
        return False

    def sleep(self, seconds: float) -> None:
        """Sleep without holding up the server's other requests."""
        time.sleep(seconds)

    def poll(self) -> t.Any:
        """Return a new ``select.poll()`` object that does not yield to other greenlets."""
        import select

        return select.poll()

    def epoll(self) -> t.Any | None:
        """Return the class ``select.epoll`` where there is one (Linux), else ``None``."""
        import select

        return getattr(select, "epoll", None)

    def cost_warning(self, capacity: int | None, target: str = "app:create_app()") -> str | None:
        """Return what each stream costs on this server, when that deserves a warning.

        :param target: the app as gunicorn names it, for the command suggested.
        """
        if not self.threaded:
            return None
        threads = self.threads()
        if capacity is None:
            held = "a thread is started for each, without limit"
        else:
            held = (
                f"so this worker holds at most {capacity} stream(s) and keeps the rest of its"
                " threads for ordinary requests; more streams are answered 200 with retry:"
                " and end"
            )
        return (
            f"flask_sse_push is served by {self.name}"
            + (f" with {threads} thread(s)" if threads is not None else "")
            + f": every open stream holds one thread for its whole life, {held}. To hold"
            " thousands of streams per worker, serve with gevent: pip install"
            " 'flask-sse-push[gevent]' and run gunicorn -k"
            f" flask_sse_push.servers.gunicorn.GeventWorker '{target}'."
        )


def thread_headroom(threads: int) -> int:
    """Threads kept free for ordinary requests: a quarter, at least one."""
    return max(1, threads // 4)


def connection_headroom(connections: int) -> int:
    """Connections kept free for ordinary requests on an event-loop server: a tenth,
    at least one, at most 100."""
    return max(1, min(100, connections // 10))


class ParkableSource(t.Protocol):
    """What a server that parks streams needs of a stream's body source (the
    runtime's :class:`~flask_sse_push.stream.BodyChunks`)."""

    @property
    def live(self) -> CarriedStream: ...

    @property
    def keepalive(self) -> float: ...

    @property
    def deadline(self) -> float | None: ...

    @property
    def opened(self) -> bool: ...

    def chunks(self) -> Iterator[bytes]: ...

    def opening(self) -> bytes: ...

    def hand_to_writer(self) -> bool: ...

    def can_park(self) -> bool: ...

    def park(self, wake: Callable[[], None]) -> bool: ...

    def poll_chunk(self, keepalive_due: bool) -> bytes | None: ...

    def release(self) -> None: ...


class StreamBody:
    """The response body of a stream: chunks, ``close()`` and ``attach()``.

    The server calls ``close()`` when the response ends or the client goes
    away. A generator that is blocked in another thread cannot be closed
    directly ("generator already executing"), so then ``on_close`` ends its
    subscription, which wakes it and lets it finish by itself.

    :param chunks: the encoded body, or a function that makes it when the
        server first iterates the body (a server that parks the stream never does).
    :param on_close: runs once the server is done with the response, even if it
        never iterated the body.
    :param attachable: gets the carrier a server offers, through its own
        ``attach(carrier)`` (see :meth:`attach`); the live stream.
    :param source: what makes the chunks, for a server that parks streams
        (:attr:`source`); ``None`` for a body that cannot park.
    """

    __slots__ = ("_chunks", "_on_close", "_attachable", "source", "carrier")

    def __init__(
        self,
        chunks: Iterator[bytes] | Callable[[], Iterator[bytes]],
        on_close: Callable[[], object] | None = None,
        attachable: Attachable | None = None,
        source: ParkableSource | None = None,
    ) -> None:
        self._chunks = chunks
        self._on_close = on_close
        self._attachable = attachable
        #: The body's source, for a server that parks streams.
        self.source = source
        #: The carrier a server attached, or ``None``.
        self.carrier: object | None = None

    def _iterator(self) -> Iterator[bytes]:
        chunks = self._chunks
        if callable(chunks) and not hasattr(chunks, "__next__"):
            chunks = self._chunks = chunks()
        return t.cast("Iterator[bytes]", chunks)

    def __iter__(self) -> Iterator[bytes]:
        # The server iterates the chunks themselves, one Python call less per
        # chunk; it still calls close() on this object, not on what it iterates.
        return self._iterator()

    def __next__(self) -> bytes:
        return next(self._iterator())

    def attach(self, carrier: object) -> None:
        """Offer the stream a direct carrier; only a server that owns this response's
        framing and byte count, and got this very object from the application, may."""
        self.carrier = carrier
        if self._attachable is not None:
            self._attachable.attach(carrier)

    def take_carrier(self) -> object | None:
        """Return the carrier :meth:`attach` got, and let go of it (it holds the
        request's objects, which a parked stream does not keep)."""
        carrier, self.carrier = self.carrier, None
        return carrier

    def close(self) -> None:
        chunks = self._chunks
        if getattr(chunks, "gi_running", False):
            # It runs in another thread: on_close ends its subscription, which
            # wakes it, and it finishes by itself.
            if self._on_close is not None:
                self._on_close()
            return
        # First the generator, whose ``finally`` learns why the stream ended;
        # then on_close, which reports it.
        close = getattr(chunks, "close", None)
        if close is not None and hasattr(chunks, "__next__"):
            close()
        if self._on_close is not None:
            self._on_close()
