"""Threaded WSGI servers: waitress, and Werkzeug's server behind ``flask run``.

Each open stream holds one of the server's threads for its whole life, so the
default capacity keeps a quarter of a bounded pool (at least one thread) for
ordinary requests (gunicorn's ``gthread`` and ``sync`` workers are described in
:mod:`flask_sse_push.servers.gunicorn`, with the same rule). A source given to
``SSEPush.stream()`` runs in a thread, which cannot be stopped from outside: it
is closed at its next item after its client leaves.
"""

from __future__ import annotations

import socket
import typing as t

from .base import Server

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from .tcp import SocketLike


class Waitress(Server):
    """waitress: a fixed pool of ``threads`` (4 by default).

    Its environ gives the connection's channel (through the bound method
    ``waitress.client_disconnected``), whose ``socket`` is the client's: the
    monitor watches it for the client's FIN, so a client that left is released
    within a second whatever ``channel_request_lookahead`` is. (waitress's own
    check only notices it while reading ahead, with a lookahead above 0.)
    """

    name = "waitress"
    threaded = True
    more_room = "raise waitress's threads"

    def __init__(self, environ: t.Mapping[str, t.Any]) -> None:
        self._gone = environ.get("waitress.client_disconnected")
        channel = getattr(self._gone, "__self__", None)
        threads = getattr(getattr(channel, "adj", None), "threads", None)
        self._threads = threads if isinstance(threads, int) and threads > 0 else None

    def threads(self) -> int | None:
        return self._threads

    def gone_check(self, environ: t.Mapping[str, t.Any]) -> Callable[[], bool] | None:
        check = environ.get("waitress.client_disconnected")
        return check if callable(check) else None

    def socket(self, environ: t.Mapping[str, t.Any]) -> SocketLike | None:
        if not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
            return None
        channel = getattr(environ.get("waitress.client_disconnected"), "__self__", None)
        sock = getattr(channel, "socket", None)
        return sock if isinstance(sock, socket.socket) else None


class Werkzeug(Server):
    """Werkzeug's development server (``flask run``): a thread per request, or one thread."""

    name = "Werkzeug's development server (flask run)"
    threaded = True

    def __init__(self, environ: t.Mapping[str, t.Any]) -> None:
        self._unbounded = bool(environ.get("wsgi.multithread") or environ.get("wsgi.multiprocess"))

    def threads(self) -> int | None:
        return None if self._unbounded else 1

    def capacity(self) -> int | None:
        return None if self._unbounded else 0

    def socket(self, environ: t.Mapping[str, t.Any]) -> SocketLike | None:
        if not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
            return None
        return t.cast("SocketLike | None", environ.get("werkzeug.socket"))
