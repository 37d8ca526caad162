"""The client's TCP socket, where the server exposes it: options, errors, and cutting it.

Only gunicorn hands the socket to the application (``environ["gunicorn.socket"]``),
under every worker class. Elsewhere these functions are never called, and a
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


class SocketLike(t.Protocol):
    """What this module needs of a socket; gevent's socket has it too."""

    def fileno(self) -> int: ...

    @t.overload
    def getsockopt(self, level: int, optname: int, /) -> int: ...

    @t.overload
    def getsockopt(self, level: int, optname: int, buflen: int, /) -> bytes: ...

    def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...


def client_socket(environ: t.Mapping[str, t.Any]) -> SocketLike | None:
    """Return the socket of an HTTP/1.x request, or ``None``.

    An HTTP/2 connection carries many streams, so one stream must not set its
    options or shut it down.
    """
    sock = environ.get("gunicorn.socket")
    if sock is None or not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
        return None
    if environ.get("HTTP_VERSION") == "2":
        return None
    return t.cast("SocketLike", sock)


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
