"""What streams need from gevent, whichever server runs it.

An application's source runs in a greenlet that can be killed: a source blocked
in ``time.sleep`` or ``queue.get`` gets :class:`gevent.GreenletExit` there, so
its ``finally`` runs at once, not at its next item. The monitor polls sockets
with the original, blocking ``select.epoll``/``poll`` (with a zero timeout),
not gevent's cooperative one, which would create a watcher per socket on every
tick.

Code elsewhere that needs a primitive of the OS thread, whatever gevent
patched (the Redis broker's per-thread connections), gets it here too.
"""

from __future__ import annotations

import sys
import threading
import typing as t

from .base import Server

if t.TYPE_CHECKING:
    from collections.abc import Callable

    import gevent


def monkey_patched() -> bool:
    """Whether gevent has patched this process's threads into greenlets."""
    import sys

    if "gevent.monkey" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


def thread_bound_sockets() -> t.Callable[[], int] | None:
    """Return the OS thread's ident function if sockets belong to one thread's hub.

    Under gevent's monkey-patching a socket is bound to the hub (event loop) of
    the OS thread that made it, and fails or hangs when used from another OS
    thread. Then each OS thread needs connections of its own. ``threading`` is
    patched too, so the ident must come from the unpatched ``_thread``.
    """
    if "gevent.monkey" not in sys.modules:
        return None
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return None
    get_ident: t.Callable[[], int] = monkey.get_original("_thread", "get_ident")
    return get_ident


def os_lock() -> threading.Lock:
    """A lock between OS threads, whatever gevent patched."""
    if "gevent.monkey" in sys.modules:
        from gevent import monkey

        lock: threading.Lock = monkey.get_original("_thread", "allocate_lock")()
        return lock
    return threading.Lock()


def os_thread_local() -> t.Any:
    """A thread-local object per OS thread (gevent patches ``threading.local`` per greenlet)."""
    if "gevent.monkey" in sys.modules:
        from gevent import monkey

        return monkey.get_original("_thread", "_local")()
    return threading.local()


class _Greenlet:
    """A source in a greenlet; :meth:`cancel` kills it where it blocks."""

    __slots__ = ("greenlet",)

    def __init__(self, target: Callable[[], None]) -> None:
        import gevent

        self.greenlet: gevent.Greenlet[[], None] = gevent.spawn(target)

    def cancel(self) -> None:
        # From the hub's thread only: gevent objects belong to one thread.
        import gevent

        if gevent.get_hub().thread_ident == _original_ident()():
            self.greenlet.kill(block=False)


def _original_ident() -> Callable[[], int]:
    from gevent.monkey import get_original

    ident: Callable[[], int] = get_original("_thread", "get_ident")
    return ident


class GeventServer(Server):
    """Any server whose requests are greenlets in a monkey-patched process."""

    name = "a gevent server"

    def spawn(self, target: Callable[[], None]) -> _Greenlet:
        return _Greenlet(target)

    def sleep(self, seconds: float) -> None:
        import gevent

        gevent.sleep(seconds)

    def poll(self) -> t.Any:
        from gevent.monkey import get_original

        return get_original("select", "poll")()

    def epoll(self) -> t.Any | None:
        from gevent.monkey import get_original

        try:
            return get_original("select", "epoll")
        except AttributeError:  # not Linux
            return None
