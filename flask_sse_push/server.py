"""What the extension learns from, and hooks into, the gunicorn process it runs in.

Nothing here needs a gunicorn config file or server hook, so a plain
``gunicorn -k gevent 'app:create_app()'`` gets graceful stream shutdown too. The
worker (or, with ``--preload``, the arbiter) is found through the SIGTERM handler
gunicorn installs, which is a bound method of that object.
"""

from __future__ import annotations

import contextlib
import signal
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

#: Signals after which a gunicorn worker stops: TERM is the graceful stop (also
#: sent to old workers on a HUP reload), QUIT and INT the quick one.
SHUTDOWN_SIGNALS = ("SIGTERM", "SIGQUIT", "SIGINT")

_Handler: t.TypeAlias = "Callable[[int, FrameType | None], t.Any] | int | None"


def gunicorn_process() -> t.Any | None:
    """Return the gunicorn worker or arbiter of this process, or ``None``."""
    handler = signal.getsignal(signal.SIGTERM)
    if isinstance(handler, _Chained):  # ours, in front of gunicorn's
        handler = handler.previous
    owner = getattr(handler, "__self__", None)
    if owner is None or not type(owner).__module__.startswith("gunicorn."):
        return None
    return owner


def gunicorn_worker() -> t.Any | None:
    """Return the gunicorn worker serving in this process, or ``None``."""
    owner = gunicorn_process()
    if owner is None or not hasattr(owner, "alive"):
        return None
    return owner


def blocking_gunicorn_worker() -> str | None:
    """Return the ``-k`` name of gunicorn's worker if it serves one request at a
    time (``sync``), else ``None``: there each open stream holds a whole worker."""
    worker = gunicorn_worker()
    if worker is not None and type(worker).__module__ == "gunicorn.workers.sync":
        return "sync"
    return None


def worker_connections() -> int | None:
    """Return gunicorn's ``worker_connections`` setting, if running under gunicorn."""
    owner = gunicorn_process()
    value = getattr(getattr(owner, "cfg", None), "worker_connections", None)
    return value if isinstance(value, int) else None


def chain_shutdown_handlers(callback: Callable[[], None]) -> bool:
    """Call ``callback`` first whenever gunicorn's worker gets a shutdown signal.

    gunicorn's own handler still runs right after it. ``callback`` runs inside a
    signal handler, so it must only set flags and wake someone up.

    :returns: whether the handlers were installed; they cannot be from a thread
        other than the main one (gunicorn's gthread worker), nor outside gunicorn.
    """
    if gunicorn_worker() is None:
        return False
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
