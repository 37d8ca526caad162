"""The client's TCP socket, where the server exposes it: options, errors, EOF, cutting it.

Nothing here knows a server: each server module says whether it exposes the
socket (:meth:`~flask_sse_push.servers.base.Server.socket`). Where none does, a
stream is bounded by the keepalive and the OS's own TCP timeouts alone.
"""

from __future__ import annotations

import _socket
import contextlib
import math
import os
import socket
import struct
import typing as t

#: The most bytes a stream hands its server in one write. The send timeout is
#: measured per piece, so it measures a lack of progress: a slow but steady
#: client is never cut for the size of an event, a client that reads nothing is.
PIECE = 64 * 1024


class SocketLike(t.Protocol):
    """What this module needs of a socket; gevent's socket has it too."""

    def fileno(self) -> int: ...

    @t.overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...

    @t.overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...

    def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...


def tcp_options(keepalive: float, send_timeout: float) -> list[tuple[int, int, int]]:
    """Return the ``setsockopt`` triples this platform supports for a stream.

    - TCP keepalive probes start after ``keepalive`` idle seconds, in case the
      stream itself stops writing.
    - ``TCP_USER_TIMEOUT`` (Linux) makes the kernel drop the connection once sent
      data has gone unacknowledged, or the peer's window has stayed shut, for
      ``keepalive + send_timeout``. It is the backstop: the monitor, which acts
      sooner (:func:`unacked_for`) and cleanly, normally gets there first.
    """
    idle = max(1, math.ceil(keepalive))
    interval = max(1, math.ceil(send_timeout / 3))
    user_timeout = max(1, math.ceil((keepalive + send_timeout) * 1000))
    wanted = [
        ("SOL_SOCKET", "SO_KEEPALIVE", 1),
        ("IPPROTO_TCP", "TCP_KEEPIDLE", idle),
        ("IPPROTO_TCP", "TCP_KEEPALIVE", idle),  # macOS's name for TCP_KEEPIDLE
        ("IPPROTO_TCP", "TCP_KEEPINTVL", interval),
        ("IPPROTO_TCP", "TCP_KEEPCNT", 3),
        ("IPPROTO_TCP", "TCP_USER_TIMEOUT", user_timeout),
    ]
    return [
        (getattr(socket, level), getattr(socket, name), value)
        for level, name, value in wanted
        if hasattr(socket, name)
    ]


def tune(sock: SocketLike, keepalive: float, send_timeout: float) -> None:
    """Set :func:`tcp_options` on ``sock``; a Unix socket or an old kernel refuses some."""
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, name, value in tcp_options(keepalive, send_timeout):
        with contextlib.suppress(OSError):
            sock.setsockopt(level, name, value)


def take_error(sock: SocketLike) -> int:
    """Return and clear the socket's pending error (0 if none, or if it is closed).

    The kernel sets one when the peer reset the connection or ``TCP_USER_TIMEOUT``
    expired. Clearing it means the server's next write fails with ``EPIPE``,
    which gunicorn ignores quietly, instead of ``ETIMEDOUT``, which it logs as
    an error with a traceback.
    """
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except OSError:
        return 0


#: Linux ``struct tcp_info`` up to ``tcpi_last_ack_recv``: eight one-byte fields,
#: then 32-bit ones; ``tcpi_unacked`` is the fifth of those and
#: ``tcpi_last_ack_recv`` the thirteenth. The layout only ever grows at the end.
_TCP_INFO = struct.Struct("=8B13I")


def unacked_for(sock: SocketLike) -> float | None:
    """Seconds since the peer last acknowledged anything, if data awaits its ACK.

    ``None`` when nothing is outstanding, or where ``TCP_INFO`` is not available.
    A healthy client acknowledges every keepalive within a round trip, so data
    unacknowledged for longer than ``keepalive + send_timeout`` means the peer
    is gone, even though no FIN or RST ever came.
    """
    option = getattr(socket, "TCP_INFO", None)
    if option is None or not hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux only
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO.size)
    except OSError:
        return None
    if len(raw) < _TCP_INFO.size:
        return None
    fields = _TCP_INFO.unpack_from(raw)
    unacked, last_ack_recv_ms = fields[8 + 4], fields[8 + 12]
    return last_ack_recv_ms / 1000 if unacked else None


def cut(sock: SocketLike) -> None:
    """Shut the connection down in both directions, under whoever is using it.

    A write blocked on it fails at once with ``EPIPE``. This goes through a
    duplicate descriptor on purpose: gevent's own ``socket.shutdown`` wakes a
    waiting writer with ``EBADF`` instead, which gunicorn logs as an error.
    """
    try:
        fd = os.dup(sock.fileno())
    except OSError:  # closed already
        return
    try:
        duplicate = _socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:  # not connected any more
        pass
    finally:
        duplicate.close()


def closed_by_peer(sockets: list[SocketLike], poll: t.Any) -> list[int]:
    """Return the indexes of ``sockets`` whose peer has closed or reset the connection.

    An SSE client sends nothing after its request, so a socket that turns
    readable has either reached EOF (the client closed it) or holds a pipelined
    request, which is left alone. Linux reports a peer's FIN as ``POLLRDHUP``;
    elsewhere one byte is peeked to tell the two apart.

    :param poll: a fresh ``select.poll()`` object (one that does not yield to
        other greenlets).
    """
    import select

    rdhup = getattr(select, "POLLRDHUP", 0)
    flags = select.POLLIN | rdhup
    index_of: dict[int, int] = {}
    for index, sock in enumerate(sockets):
        try:
            fd = sock.fileno()
        except OSError:
            continue
        if fd >= 0:  # -1: the server has closed it, and is done with the stream
            index_of[fd] = index
            poll.register(fd, flags)
    gone: list[int] = []
    for fd, events in poll.poll(0):
        found = index_of.get(fd)
        if found is None:
            continue
        if events & (select.POLLHUP | select.POLLERR | rdhup) or (
            events & select.POLLIN and not rdhup and _at_eof(fd)
        ):
            gone.append(found)
    return gone


def _at_eof(fd: int) -> bool:
    """Whether a readable descriptor has reached EOF, peeked without consuming anything."""
    try:
        duplicate = _socket.socket(fileno=os.dup(fd))
    except OSError:
        return True
    try:
        return duplicate.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    finally:
        duplicate.close()


_K = t.TypeVar("_K", bound=t.Hashable)


class HangupWatch(t.Generic[_K]):
    """Sockets watched for the peer's FIN in the kernel: one ``epoll`` set (Linux).

    A check costs one ``epoll_wait`` however many sockets are watched, so it
    can run often. Only ``EPOLLRDHUP`` is asked for: a pipelined request, which
    makes a socket readable, does not wake it.

    :param epoll: the class ``select.epoll`` (the original, under gevent).
    """

    def __init__(self, epoll: t.Any) -> None:
        import select

        self._epoll = epoll()
        self._flags = select.EPOLLRDHUP
        #: The key watched under each descriptor, indexed by descriptor. A list,
        #: not a dict: descriptors are small dense integers, and a list slot is
        #: a fraction of a dict entry, once for each of 10,000s of streams.
        self._keys: list[_K | None] = []

    def add(self, key: _K, sock: SocketLike) -> bool:
        """Watch ``sock`` under ``key`` until :meth:`remove`.

        :returns: False if ``sock`` cannot be watched (closed already, or its
            descriptor is watched already).
        """
        try:
            fd = sock.fileno()
            self._epoll.register(fd, self._flags)
        except (OSError, ValueError):
            return False
        keys = self._keys
        if fd >= len(keys):
            keys.extend([None] * (fd + 1 - len(keys)))
        keys[fd] = key
        return True

    def remove(self, key: _K, sock: SocketLike) -> None:
        """Stop watching ``key``, which :meth:`add` watched with ``sock``."""
        keys = self._keys
        try:
            fd = sock.fileno()
        except (OSError, ValueError):
            fd = -1
        if fd < 0:
            # Closed before it was forgotten: the kernel dropped it from the
            # set, but its slot is not known any more. Rare, so a search.
            fd = next((index for index, held in enumerate(keys) if held is key), -1)
            if fd >= 0:
                keys[fd] = None
            return
        if fd < len(keys) and keys[fd] is key:
            keys[fd] = None
            # The kernel forgets a closed descriptor by itself.
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(fd)

    def hung_up(self) -> list[_K]:
        """Return the keys whose peer closed (or reset) the connection."""
        keys = self._keys
        found = [keys[fd] for fd, _ in self._epoll.poll(0) if fd < len(keys)]
        return [key for key in found if key is not None]

    def close(self) -> None:
        self._epoll.close()
