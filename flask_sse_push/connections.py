"""The live streams of one app in this process: capacity, revocation and shutdown.

Every streaming response holds a :class:`LiveStream` in its app's
:class:`StreamRegistry` from the moment it is accepted until the server closes it.
The registry refuses streams beyond its capacity (``SSE_PUSH_MAX_CONNECTIONS``,
or what the server can hold) and while the worker shuts down, and can end any
set of streams from another greenlet or thread: the stream wakes, writes its
final bytes and returns. :mod:`flask_sse_push.monitor` calls :meth:`StreamRegistry.sweep`
to find clients that left, writes that make no progress, and dead peers.
"""

from __future__ import annotations

import dataclasses
import errno
import threading
import time
import typing as t

from .sockets import HangupWatch, closed_by_peer, cut, unacked_for
from .sockets import take_error as socket_error
from .stream import closing_chunk, spread_retry

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from .brokers.base import Subscription
    from .servers.base import FastWriter, Server
    from .sockets import SocketLike


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """What the extension knows about one live stream.

    :meth:`SSEPush.revoke` predicates and :meth:`SSEPush.streams` get these.

    :param channels: the channels the stream serves, in the order asked for;
        empty for an application's own :meth:`SSEPush.stream`.
    :param identity: what the :meth:`SSEPush.identify` hook returned for the
        request (for example a user id), or ``None``.
    :param remote_addr: the client address as Flask saw it (``request.remote_addr``).
    :param last_event_id: the cursor the client connected with, if any.
    :param started_at: when the stream was accepted (``time.time()``).

    .. versionadded:: 0.1
    """

    channels: tuple[str, ...]
    identity: t.Any = None
    remote_addr: str | None = None
    last_event_id: str | None = None
    started_at: float = dataclasses.field(default_factory=time.time)


#: Why :meth:`StreamRegistry.open` refuses a client that has its share of streams.
TOO_MANY = "too many streams from this client"


def client_key(info: StreamInfo) -> object:
    """Who a stream counts against for the per-client limit: its identity, when
    :meth:`SSEPush.identify` gave a hashable one, else its address."""
    identity = info.identity
    if identity is not None:
        try:
            hash(identity)
        except TypeError:
            pass
        else:
            return ("identity", identity)
    return ("address", info.remote_addr)


@dataclasses.dataclass(frozen=True)
class Ending:
    """Why a stream is being ended from outside, and the bytes it leaves with."""

    reason: str
    final: bytes


class LiveStream:
    """One accepted stream, as its registry and the monitor see it.

    Its methods are the only writers of its fields; everyone else (the stream's
    body, the view, the fast path, the registry and the monitor) reads them or
    calls those methods.
    """

    __slots__ = (
        "info",
        "socket",
        "gone",
        "subscription",
        "offer",
        "writer",
        "write_started",
        "ending",
        "finished",
        "cut",
        "reason",
    )

    def __init__(
        self,
        info: StreamInfo,
        socket: SocketLike | None,
        gone: Callable[[], bool] | None = None,
    ) -> None:
        self.info = info
        self.socket = socket
        #: The server's own check that the client left, where it has one.
        self.gone = gone
        self.subscription: Subscription | None = None
        #: Makes the fast-path writer from a server's carrier (the runtime's,
        #: shared by every stream), where the fast path is on.
        self.offer: Callable[[object, LiveStream], FastWriter | None] | None = None
        #: The fast-path writer the server offered, if any.
        self.writer: FastWriter | None = None
        #: ``time.monotonic()`` when the stream handed the server a piece of at
        #: most :data:`~flask_sse_push.sockets.PIECE` bytes that it has not
        #: finished writing; ``None`` between writes.
        self.write_started: float | None = None
        self.ending: Ending | None = None
        #: Set when the body ended by itself, so the connection can be closed too.
        self.finished = False
        self.cut = False
        #: Why the stream ended, as far as it is known yet (``None``: nothing
        #: said otherwise, so the client left); see :meth:`final_reason`.
        self.reason: str | None = None

    def set_subscription(self, subscription: Subscription) -> None:
        """Take the subscription the stream reads its events from."""
        self.subscription = subscription

    def allow_direct_writes(self, offer: Callable[[object, LiveStream], FastWriter | None]) -> None:
        """Let a server's carrier (see :meth:`attach`) become a fast-path writer, through
        ``offer`` (the runtime's, shared by every stream)."""
        self.offer = offer

    def moved_to(self, socket: SocketLike) -> None:
        """Watch and cut ``socket`` from now on: the server moved the connection
        to a new socket object (same descriptor) when the stream parked."""
        self.socket = socket

    def drop_writer(self) -> None:
        """Forget the fast-path writer: the subscription would not take it."""
        self.writer = None

    def finish(self) -> None:
        """Mark that the body ended by itself, its last write done."""
        self.write_started = None
        self.finished = True

    def learned(self, reason: str | None) -> None:
        """Record why the stream ended, as the stream itself learned it (``lifetime``,
        ``overflow``...); ``None`` leaves it unknown."""
        self.reason = reason

    def attach(self, carrier: object) -> None:
        """Take the carrier a server offers for this stream's response (see
        :class:`~flask_sse_push.servers.base.StreamBody`)."""
        if self.offer is not None:
            self.writer = self.offer(carrier, self)

    def began_write(self) -> None:
        """Mark the start of a blocking write of at most
        :data:`~flask_sse_push.sockets.PIECE` bytes, for the send timeout."""
        self.write_started = time.monotonic()

    def wrote(self) -> None:
        """Mark that no blocking write is under way."""
        self.write_started = None

    def final_reason(self) -> str:
        """Why the stream ended: an ending asked for from outside (``revoked``,
        ``shutdown``, ``client`` seen by the monitor...), else what the stream or
        the monitor learned (``overflow``, ``lifetime``, ``send_timeout``...),
        else ``client``."""
        if self.ending is not None:
            return self.ending.reason
        return self.reason or "client"

    def end(self, ending: Ending) -> bool:
        """Ask the stream to end with ``ending``; return False if it was ending already.

        Closing the subscription wakes a stream that waits for events.
        """
        if self.ending is not None:
            return False
        self.ending = ending
        subscription = self.subscription
        if subscription is not None:
            subscription.close()
        return True

    def cut_connection(self, reason: str | None = None) -> None:
        """Shut the socket down, so a hung write fails and the stream is released.

        :param reason: recorded as :attr:`reason` unless one is known already.
        """
        if self.socket is not None and not self.cut:
            self.cut = True
            if reason is not None and self.reason is None:
                self.reason = reason
            cut(self.socket)


class StreamRegistry:
    """The live streams of one app in this process.

    :param max_connections: streams accepted at once; ``None`` for no limit. The
        runtime sets it from the server once the server is known.
    :param max_per_client: streams accepted at once for one client (see
        :func:`client_key`); ``None`` for no limit. Set by the runtime too.
    :param send_timeout: seconds a write may go without progress: a piece of at
        most :data:`~flask_sse_push.sockets.PIECE` bytes may take this long.
    :param retry: the app's ``SSE_PUSH_RETRY``, the basis of the shutdown hint.
    :param keepalive: the app's keepalive interval: a peer that has acknowledged
        nothing for ``keepalive + send_timeout`` is gone.
    """

    def __init__(
        self,
        *,
        max_connections: int | None,
        max_per_client: int | None = None,
        send_timeout: float,
        retry: int | None,
        keepalive: float = 15.0,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        #: Open streams per :func:`client_key`, for clients with one at least.
        self._per_client: dict[object, int] = {}
        self.send_timeout = send_timeout
        self.retry = retry
        self.keepalive = keepalive
        self._streams: dict[LiveStream, None] = {}
        self._lock = threading.Lock()
        #: The kernel's watch over the streams' sockets for a peer's FIN; the
        #: runtime sets it where the server offers ``epoll``.
        self.hangups: HangupWatch[LiveStream] | None = None
        #: Streams whose server has its own check that the client left.
        self._checked: dict[LiveStream, None] = {}
        #: ``time.monotonic()`` when shutdown began, or ``None``.
        self.shutdown_at: float | None = None
        #: Why every stream is refused (the server cannot run one), or ``None``.
        self.refusal: str | None = None
        #: ``time.monotonic()`` of the last look at every socket's TCP state.
        self._peers_checked = 0.0

    def __len__(self) -> int:
        return len(self._streams)

    def open(
        self,
        info: StreamInfo,
        socket: SocketLike | None,
        gone: Callable[[], bool] | None = None,
    ) -> LiveStream | str:
        """Accept a stream, or return why not (the worker is full or stopping,
        or the client has its share of it)."""
        if self.shutdown_at is not None:
            return "server shutting down"
        if self.refusal is not None:
            return self.refusal
        key = client_key(info)
        with self._lock:
            limit = self.max_connections
            if limit is not None and len(self._streams) >= limit:
                return "at capacity"
            held = self._per_client.get(key, 0)
            share = self.max_per_client
            if share is not None and held >= share:
                return TOO_MANY
            self._per_client[key] = held + 1
            stream = LiveStream(info, socket, gone)
            self._streams[stream] = None
            if socket is not None and self.hangups is not None:
                self.hangups.add(stream, socket)
            if gone is not None:
                self._checked[stream] = None
        return stream

    def close(self, stream: LiveStream) -> None:
        """Forget ``stream``; the server is done with it."""
        with self._lock:
            if stream in self._streams:
                key = client_key(stream.info)
                left = self._per_client[key] - 1
                if left:
                    self._per_client[key] = left
                else:
                    del self._per_client[key]
            self._streams.pop(stream, None)
            self._checked.pop(stream, None)
            if self.hangups is not None and stream.socket is not None:
                self.hangups.remove(stream, stream.socket)

    def streams(self) -> list[LiveStream]:
        with self._lock:
            return list(self._streams)

    def end_where(self, predicate: Callable[[StreamInfo], bool], ending: Ending) -> int:
        """End every stream whose info matches; return how many were ended."""
        matched = [stream for stream in self.streams() if predicate(stream.info)]
        return sum(stream.end(ending) for stream in matched)

    def shut_down(self) -> int:
        """Refuse new streams and end every open one with a spread-out ``retry:``."""
        if self.shutdown_at is None:
            self.shutdown_at = time.monotonic()
        ended = 0
        for stream in self.streams():
            if stream.ending is None:
                final = closing_chunk("server shutting down", spread_retry(self.retry))
                ended += stream.end(Ending("shutdown", final))
        return ended

    def release_hangups(self) -> None:
        """End the streams whose client closed its connection; cheap enough for every tick.

        ``epoll`` reports a socket error too (``EPOLLERR``): the peer reset the
        connection (``client``), or ``TCP_USER_TIMEOUT`` gave up on a peer that
        stopped acknowledging (``peer gone``). Either error is taken from the
        socket, as :meth:`sweep` does, so the server's next write fails quietly.
        """
        if self.hangups is not None:
            for stream in self.hangups.hung_up():
                error = 0 if stream.socket is None else socket_error(stream.socket)
                if error == errno.ETIMEDOUT:
                    stream.end(Ending("peer gone", b""))
                    stream.cut_connection()
                else:
                    stream.end(Ending("client", b""))
        if self._checked:
            with self._lock:
                checked = list(self._checked)
            for stream in checked:
                if stream.ending is None and stream.gone is not None and stream.gone():
                    stream.end(Ending("client", b""))

    def peer_interval(self) -> float:
        """Seconds between two looks at every socket's TCP state in :meth:`sweep`.

        A tenth of the ``keepalive + send_timeout`` a silent peer is given, kept
        between 1 and 5 seconds: each look costs a system call per stream, and
        a long pass delays the events published meanwhile.
        """
        return min(5.0, max(1.0, (self.keepalive + self.send_timeout) / 10))

    def sweep(self, now: float, server: Server) -> None:
        """Release streams whose client left, and cut writes that make no progress.

        - A client left when its socket reached EOF or the server's own check
          says so (``client``), when the kernel reports an error on the socket
          (reset, ``TCP_USER_TIMEOUT``), or when it has acknowledged none of the
          data in flight for ``keepalive + send_timeout`` (``peer gone``). Where
          the :attr:`hangups` watch reports EOF and errors, the sockets' TCP
          state is read only every :meth:`peer_interval` seconds.
        - A write makes no progress when one piece of it has taken
          ``send_timeout`` seconds (once shutdown has begun, one second, so a
          stuck client cannot hold the worker up): the connection is cut
          (``send_timeout``).
        """
        shutdown_at = self.shutdown_at
        limit = self.send_timeout if shutdown_at is None else min(self.send_timeout, 1.0)
        silence = self.keepalive + self.send_timeout
        streams = [stream for stream in self.streams() if not stream.cut]
        watched = self.hangups is not None
        if not watched:  # no epoll: look at every socket
            _end_closed_by_peer(streams, server)
        peers = not watched or now - self._peers_checked >= self.peer_interval()
        if peers:
            self._peers_checked = now
        for index, stream in enumerate(streams):
            if index % 64 == 63:
                # Let other greenlets run: a publisher's fan-out waits meanwhile.
                server.sleep(0)
            sock = stream.socket
            if sock is None:
                continue
            if peers and _peer_gone(sock, silence, take_error=not watched):
                stream.end(Ending("peer gone", b""))
                stream.cut_connection()
                continue
            if _write_stalled(stream, now, limit, shutdown_at):
                stream.cut_connection("send_timeout")


def _write_stalled(stream: LiveStream, now: float, limit: float, shutdown_at: float | None) -> bool:
    """Whether one piece of ``stream``'s current write has taken over ``limit``
    seconds, counted from the start of shutdown if that came later."""
    started = stream.write_started
    if started is None:
        return False
    if shutdown_at is not None:
        started = max(started, shutdown_at)
    return now - started > limit


def _end_closed_by_peer(streams: list[LiveStream], server: Server) -> None:
    """End (``client``) the streams whose socket the peer has closed."""
    open_sockets = [stream for stream in streams if stream.socket is not None]
    for index in closed_by_peer([s.socket for s in open_sockets if s.socket], server.poll()):
        open_sockets[index].end(Ending("client", b""))


def _peer_gone(sock: SocketLike, silence: float, *, take_error: bool) -> bool:
    """Whether the peer of ``sock`` has acknowledged nothing for ``silence``
    seconds, or (with ``take_error``) the kernel reports an error on the socket."""
    unacked = unacked_for(sock)
    error = socket_error(sock) if take_error else 0
    return bool(error) or (unacked is not None and unacked > silence)
