"""Threaded WSGI servers: waitress, and Werkzeug's server behind ``flask run``.

Each open stream holds one of the server's threads for its whole life, so the
default capacity keeps a quarter of a bounded pool (at least one thread) for
ordinary requests (gunicorn's ``gthread`` and ``sync`` workers are described in
:mod:`flask_sse_push.servers.gunicorn`, with the same rule). A source given to
``SSEPush.stream()`` runs in a thread, which cannot be stopped from outside: it
is closed at its next item after its client leaves.

Both run their loop in the main thread, where Python runs signal handlers: on
SIGTERM or SIGINT a :class:`~flask_sse_push.servers.relay.ShutdownRelay` ends
every stream with the closed line and a spread ``retry:`` before the server's
own handling (death, ``KeyboardInterrupt``) goes ahead. It is installed from a
method the main loop calls every round, as only the main thread may install it.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import typing as t

from .base import Server
from .relay import install, on_main_loop

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from ..sockets import SocketLike


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
    #: Its main loop sends what a request thread wrote, after the body is closed.
    cut_when_finished = False

    def __init__(self, environ: t.Mapping[str, t.Any]) -> None:
        channel = getattr(environ.get("waitress.client_disconnected"), "__self__", None)
        threads = getattr(getattr(channel, "adj", None), "threads", None)
        self._threads = threads if isinstance(threads, int) and threads > 0 else None
        #: The listening server of the channel: its main loop calls ``readable()``
        #: on it every round (at most ``asyncore_loop_timeout``, 1 s, apart).
        self._server = getattr(channel, "server", None)

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

    def watch_shutdown(
        self, callback: Callable[[], None], open_streams: Callable[[], int] | None = None
    ) -> None:
        if self._server is not None and callable(getattr(self._server, "readable", None)):
            on_main_loop(self._server, "readable", lambda: install(callback, open_streams))
            # Wake the main loop now rather than at its next timeout.
            pull = getattr(getattr(self._server, "trigger", None), "pull_trigger", None)
            if callable(pull):
                pull()


class Werkzeug(Server):
    """Werkzeug's development server (``flask run``): a thread per request, or one thread."""

    name = "Werkzeug's development server (flask run)"
    threaded = True

    def __init__(self, environ: t.Mapping[str, t.Any]) -> None:
        self._unbounded = bool(environ.get("wsgi.multithread") or environ.get("wsgi.multiprocess"))
        #: Its ``serve_forever`` loop calls ``service_actions()`` every 0.5 s.
        self._server = _calling_server()

    def threads(self) -> int | None:
        return None if self._unbounded else 1

    def capacity(self) -> int | None:
        return None if self._unbounded else 0

    def socket(self, environ: t.Mapping[str, t.Any]) -> SocketLike | None:
        if not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
            return None
        return t.cast("SocketLike | None", environ.get("werkzeug.socket"))

    def watch_shutdown(
        self, callback: Callable[[], None], open_streams: Callable[[], int] | None = None
    ) -> None:
        if self._server is None:  # not under a server (a test client, say): hands off
            return
        if install(callback, open_streams):  # it runs requests in its main thread
            return
        on_main_loop(self._server, "service_actions", lambda: install(callback, open_streams))


def _calling_server() -> socketserver.BaseServer | None:
    """The ``socketserver`` server up this thread's stack, if a request runs in it."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, socketserver.BaseServer):
            return owner
        frame = frame.f_back
    return None
