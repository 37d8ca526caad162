"""uWSGI: its threads mode (``--threads N``) and its gevent loop engine (``--gevent N``).

uWSGI answers through the ``uwsgi`` module, which exists only inside its
processes; every request's environ carries ``uwsgi.version``. The socket a
request arrived on is ``uwsgi.connection_fd()``: the client's connection under
``--http-socket``, the connection from uWSGI's own HTTP router under ``--http``
(the router closes it when the client leaves, so EOF on it still means the
client left).

- **gevent with monkey patching** (``--gevent N --gevent-monkey-patch``): a
  stream is a greenlet, as under gunicorn's gevent worker; ``N`` async cores
  hold streams and ordinary requests alike, and a tenth of them (at most 100)
  is kept for ordinary requests. uWSGI's gevent loop calls ``uwsgi.atexit``
  once its control greenlet is killed (SIGINT, SIGTERM, ``--die-on-term``) while
  the hub still runs, so the streams are ended there, with the closed line and
  a spread ``retry:``, before the worker exits; a graceful reload (SIGHUP)
  ends them at once too, instead of waiting for them for the reload mercy.
- **gevent without monkey patching**: a stream waiting for events blocks the
  whole worker, so no stream is started: each gets the transient answer, and
  the startup log names the missing flag.
- **threads** (``--threads N``): each stream holds a thread; the cap is the
  threads less a quarter. uWSGI gives a busy worker no way to learn of its
  shutdown (it skips ``uwsgi.atexit`` while requests run, and its signal
  handlers are C functions Python cannot chain to), so streams are cut without
  the closed line; the process still exits at once.
"""

from __future__ import annotations

import _socket
import contextlib
import importlib
import logging
import os
import signal
import time
import typing as t

from .base import Server, connection_headroom
from .gevent import GeventServer, monkey_patched

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from ..sockets import SocketLike

logger = logging.getLogger("flask_sse_push")

#: Seconds the exit hook waits for the ended streams to write their last bytes.
SHUTDOWN_GRACE = 1.0


def detect(environ: t.Mapping[str, t.Any] | None = None) -> Server | None:
    """Return the uWSGI mode of this process, or ``None`` outside uWSGI."""
    if environ is not None and "uwsgi.version" not in environ:
        return None
    try:
        # Only uWSGI's own processes have it (not an installed package).
        uwsgi = importlib.import_module("uwsgi")
    except ImportError:
        return None
    if _option(uwsgi, "gevent") is not None or str(getattr(uwsgi, "loop", "")) == "gevent":
        if monkey_patched():
            return UwsgiGevent(uwsgi)
        return UwsgiUnpatched(uwsgi)
    return UwsgiThreaded(uwsgi)


def _option(module: t.Any, name: str) -> str | None:
    """Return a uWSGI option as text (``uwsgi.opt`` holds bytes, or True for flags)."""
    value = getattr(module, "opt", {}).get(name)
    if value is None:
        return None
    if isinstance(value, list):  # an option given twice
        value = value[-1]
    return value.decode() if isinstance(value, bytes) else str(value)


def _cores(module: t.Any) -> int | None:
    cores = getattr(module, "cores", None)
    return cores if isinstance(cores, int) and cores > 0 else None


class FdSocket:
    """The connection uWSGI handles for a request, by descriptor; never closed here.

    Options are read and set through a socket object made over the descriptor
    and detached again, so uWSGI stays the only owner of the descriptor.
    """

    __slots__ = ("fd", "family")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        with self._borrowed() as sock:
            self.family = sock.family

    @contextlib.contextmanager
    def _borrowed(self) -> t.Iterator[_socket.socket]:
        # The C socket type: gevent's would register it with the hub. It sets
        # the descriptor non-blocking when a default timeout is set, and uWSGI's
        # threads write to it blocking: that flag is put back.
        blocking = os.get_blocking(self.fd)
        sock = _socket.socket(fileno=self.fd)
        try:
            yield sock
        finally:
            sock.detach()
            if os.get_blocking(self.fd) != blocking:
                os.set_blocking(self.fd, blocking)

    def fileno(self) -> int:
        return self.fd

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> t.Any:
        with self._borrowed() as sock:
            if buflen is None:
                return sock.getsockopt(level, optname)
            return sock.getsockopt(level, optname, buflen)

    def setsockopt(self, level: int, optname: int, value: int) -> None:
        with self._borrowed() as sock:
            sock.setsockopt(level, optname, value)


class _Uwsgi:
    """What both modes share: the connection's socket."""

    def __init__(self, module: t.Any) -> None:
        self.module = module

    def socket(self, environ: t.Mapping[str, t.Any]) -> SocketLike | None:
        if not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
            return None
        try:
            fd = self.module.connection_fd()
        except (SystemError, OSError, ValueError):  # outside a request
            return None
        if not isinstance(fd, int) or fd < 0:
            return None
        try:
            return t.cast("SocketLike", FdSocket(fd))
        except OSError:  # not a socket (a pipe under --pty, for one)
            return None


class UwsgiGevent(_Uwsgi, GeventServer):
    """uWSGI's gevent loop engine in a monkey-patched process."""

    more_room = "raise uWSGI's async cores (--gevent N)"

    def __init__(self, module: t.Any) -> None:
        _Uwsgi.__init__(self, module)
        cores = _cores(module)
        self.name = f"uWSGI --gevent {cores}" if cores else "uWSGI --gevent"
        self._stopping = False

    def capacity(self) -> int | None:
        cores = _cores(self.module)
        if cores is None:
            return None
        return max(1, cores - connection_headroom(cores))

    def watch_shutdown(
        self, callback: Callable[[], None], open_streams: Callable[[], int] | None = None
    ) -> None:
        import gevent

        def stop() -> None:
            self._stopping = True
            callback()

        # A graceful reload (SIGHUP) waits for every running request: the
        # streams must end first. libev runs every watcher of a signal, so
        # uWSGI's own handler still runs.
        with contextlib.suppress(ValueError, OSError):
            gevent.signal_handler(signal.SIGHUP, stop)
        previous = getattr(self.module, "atexit", None)

        def at_exit() -> None:
            # The hub still runs here: the streams write their last bytes.
            stop()
            deadline = time.monotonic() + SHUTDOWN_GRACE
            while open_streams is not None and open_streams() and time.monotonic() < deadline:
                gevent.sleep(0.02)
            if callable(previous):
                previous()

        self.module.atexit = at_exit

    def stopping(self) -> bool:
        return self._stopping


class UwsgiUnpatched(_Uwsgi, Server):
    """uWSGI's gevent loop without monkey patching: streams would freeze the worker."""

    more_room = "add --gevent-monkey-patch"

    def __init__(self, module: t.Any) -> None:
        _Uwsgi.__init__(self, module)
        self.name = "uWSGI --gevent without --gevent-monkey-patch"

    def refusal(self) -> str | None:
        return (
            "uWSGI runs the gevent loop engine, but gevent has not patched this process:"
            " a stream waiting for events would block every request of the worker, so"
            " flask_sse_push starts no stream and answers each with 200 and retry:. Add"
            " --gevent-monkey-patch to uWSGI's options (or call gevent.monkey.patch_all()"
            " first thing in the module uWSGI loads)."
        )


class UwsgiThreaded(_Uwsgi, Server):
    """uWSGI's threads mode (``--threads N``), or one thread per process."""

    threaded = True
    more_room = "raise uWSGI's --threads"

    def __init__(self, module: t.Any) -> None:
        _Uwsgi.__init__(self, module)
        threads = self.threads()
        self.name = f"uWSGI --threads {threads}" if threads > 1 else "uWSGI (one thread)"

    def threads(self) -> int:
        configured = _option(self.module, "threads")
        if configured is not None and configured.isdigit() and int(configured) > 0:
            return int(configured)
        return _cores(self.module) or 1
