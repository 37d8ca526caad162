"""gunicorn: its workers' settings and signals, and this package's own worker class.

Serve with ``gunicorn -k flask_sse_push.servers.gunicorn.GeventWorker`` for the
fast path: that worker is gunicorn's gevent worker, except that when a stream's
body reaches it unwrapped it lets the fan-out write events for that stream
itself, framed as the worker frames a chunk and counted in its access log. Any
other worker class (``-k gevent``, ``gthread``, ``sync``) gets the same stream
semantics through the ordinary path.

The worker (or, with ``--preload``, the arbiter) is found through the SIGTERM
handler gunicorn installs, which is a bound method of that object, so a plain
``gunicorn -k gevent 'app:create_app()'`` needs no config file or server hook.
"""

from __future__ import annotations

import contextlib
import signal
import typing as t

from .base import Server, connection_headroom
from .gevent import GeventServer

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from ..sockets import SocketLike
    from .base import CarriedStream, DeliveryCounter, FastWriter
    from .fastpath import Flusher

#: Signals after which a gunicorn worker stops: TERM is the graceful stop (also
#: sent to old workers on a HUP reload), QUIT and INT the quick one.
SHUTDOWN_SIGNALS = ("SIGTERM", "SIGQUIT", "SIGINT")

_Handler: t.TypeAlias = "Callable[[int, FrameType | None], t.Any] | int | None"


def __getattr__(name: str) -> t.Any:
    # The worker class imports gevent and gunicorn's gevent worker: only load
    # them when gunicorn asks for it (-k ...GeventWorker).
    if name == "GeventWorker":
        from ._gevent_worker import GeventWorker

        return GeventWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def gunicorn_process() -> t.Any | None:
    """Return the gunicorn worker or arbiter of this process, or ``None``."""
    handler = signal.getsignal(signal.SIGTERM)
    if isinstance(handler, _Chained):  # ours, in front of gunicorn's
        handler = handler.previous
    owner = getattr(handler, "__self__", None)
    if owner is None:
        return None
    # gunicorn's own classes, or subclasses of them (this package's worker, for one).
    if not any(base.__module__.startswith("gunicorn.") for base in type(owner).__mro__):
        return None
    return owner


def _family(kind: type) -> str | None:
    """Which of gunicorn's worker modules ``kind`` derives from."""
    for base in kind.__mro__:
        module = base.__module__
        if module in ("gunicorn.workers.ggevent", "gunicorn.workers.gthread"):
            return module.rsplit(".", 1)[1]
        if module == "gunicorn.workers.sync":
            return "sync"
    return None


def detect() -> Server | None:
    """Return the gunicorn worker this process serves in, as a :class:`Server`, or ``None``.

    In a master that has loaded the app (``--preload``) and not forked yet, there
    is no worker to describe, and the answer is ``None`` too.
    """
    owner = gunicorn_process()
    if owner is None or not hasattr(owner, "alive"):
        return None
    family = _family(type(owner))
    if family == "ggevent":
        return GunicornGevent(owner)
    if family in ("gthread", "sync"):
        return GunicornThreaded(owner, family)
    return None


class _Gunicorn:
    """What every gunicorn worker class shares: the socket, the signals, ``alive``."""

    def __init__(self, worker: t.Any) -> None:
        self.worker = worker
        self.cfg = worker.cfg

    def socket(self, environ: t.Mapping[str, t.Any]) -> SocketLike | None:
        # An HTTP/2 connection carries many streams: one must not set its
        # options or shut it down.
        sock = environ.get("gunicorn.socket")
        if sock is None or not str(environ.get("SERVER_PROTOCOL", "")).startswith("HTTP/1"):
            return None
        if environ.get("HTTP_VERSION") == "2":
            return None
        return t.cast("SocketLike", sock)

    def watch_shutdown(
        self, callback: Callable[[], None], open_streams: Callable[[], int] | None = None
    ) -> None:
        chain_shutdown_handlers(callback)

    def stopping(self) -> bool:
        return not self.worker.alive


class GunicornGevent(_Gunicorn, GeventServer):
    """gunicorn's gevent worker (``-k gevent``), or this package's :class:`GeventWorker`.

    It holds up to ``worker_connections`` connections, streams and ordinary
    requests alike; a tenth of them (at most 100) is kept for ordinary requests.
    """

    more_room = "raise gunicorn's worker_connections (--worker-connections)"

    def __init__(self, worker: t.Any) -> None:
        _Gunicorn.__init__(self, worker)
        #: Whether the worker is ours, which owns stream bodies and can carry them.
        self.owned = bool(getattr(worker, "carries_stream_bodies", False))
        self.name = (
            "gunicorn's gevent worker via flask_sse_push.servers.gunicorn.GeventWorker"
            if self.owned
            else "gunicorn -k gevent"
        )
        self._flusher: Flusher | None = None

    def capacity(self) -> int | None:
        connections = getattr(self.cfg, "worker_connections", None)
        if not isinstance(connections, int):
            return None
        return max(1, connections - connection_headroom(connections))

    def fast_writer(
        self, carrier: object, live: CarriedStream, metrics: DeliveryCounter | None
    ) -> FastWriter | None:
        from .fastpath import Carrier, DirectWriter, Flusher

        if not self.owned or not isinstance(carrier, Carrier):
            return None
        if self._flusher is None:
            # One runtime, so one metrics object for every stream it writes for.
            self._flusher = Flusher(metrics)
        return DirectWriter(carrier, self._flusher, live=live)

    def parked(self) -> int:
        parking = getattr(self.worker, "parking", None)
        return 0 if parking is None else int(parking.parked())

    def passes(self) -> int:
        """Direct-write passes run so far (for tests and benchmarks)."""
        return 0 if self._flusher is None else self._flusher.passes


class GunicornThreaded(_Gunicorn, Server):
    """gunicorn's ``gthread`` and ``sync`` workers: a stream holds a thread."""

    threaded = True
    more_room = "raise gunicorn's --threads"

    def __init__(self, worker: t.Any, family: str) -> None:
        _Gunicorn.__init__(self, worker)
        self.family = family
        self.name = f"gunicorn -k {family}"

    def threads(self) -> int:
        if self.family == "sync":
            return 1
        value = getattr(self.cfg, "threads", 1)
        return value if isinstance(value, int) and value > 0 else 1


def chain_shutdown_handlers(callback: Callable[[], None]) -> bool:
    """Call ``callback`` first whenever gunicorn's worker gets a shutdown signal.

    gunicorn's own handler still runs right after it. ``callback`` runs inside a
    signal handler, so it must only set flags and wake someone up.

    :returns: whether the handlers were installed; they cannot be from a thread
        other than the main one, nor outside gunicorn.
    """
    for name in SHUTDOWN_SIGNALS:
        number = getattr(signal, name)
        previous: _Handler = signal.getsignal(number)
        if not callable(previous):
            continue
        try:
            signal.signal(number, _Chained(callback, previous))
        except ValueError:  # not the main thread
            return False
        if number == signal.SIGTERM:
            with contextlib.suppress(OSError, ValueError):
                # As gunicorn does: TERM must not make system calls fail with EINTR.
                signal.siginterrupt(number, False)
    return True


class _Chained:
    """A signal handler that calls ``callback``, then the handler it replaced."""

    __slots__ = ("callback", "previous")

    def __init__(self, callback: Callable[[], None], previous: _Handler) -> None:
        self.callback = callback
        self.previous = previous

    def __call__(self, signum: int, frame: t.Any) -> None:
        self.callback()
        if callable(self.previous):
            self.previous(signum, frame)
