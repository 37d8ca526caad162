"""Granian's WSGI interface (``granian --interface wsgi``).

Granian runs the application in a pool of blocking threads (``--blocking-threads``,
by default half its backpressure), so each open stream holds one of them; the
cap is the threads less a quarter. It exposes neither the client socket nor a
disconnect check: a client that left is found at the first write that fails
(the next keepalive at the latest).

Granian tells an application nothing of its shutdown, and waits for every
running request before a worker exits: open streams would keep it running for
ever. Its worker's signal handler for SIGINT and SIGTERM (a Python function, run
in the worker's main thread) only sets a shutdown signal it holds in its
closure; the callback given to the shutdown signal runs only once every
connection has ended, too late. So this module puts a relay in that closure,
which first tells the streams, then sets Granian's signal. Where the handler
has another shape (another Granian version), nothing is changed, and the
startup log says that ``--workers-kill-timeout`` bounds the wait. The number of
blocking threads is read from the locals of the worker function, which the
worker's main thread sits in for its whole life.
"""

from __future__ import annotations

import signal
import sys
import threading
import typing as t

from .base import Server

if t.TYPE_CHECKING:
    from collections.abc import Callable

#: The function of Granian's worker process that serves a WSGI application.
WORKER_FUNCTION = "_spawn_wsgi_worker"


def worker_locals() -> dict[str, t.Any] | None:
    """Return the locals of Granian's worker function in this process's main thread."""
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main) if main is not None else None
    while frame is not None:
        if frame.f_code.co_name == WORKER_FUNCTION:
            return dict(frame.f_locals)
        frame = frame.f_back
    return None


class Granian(Server):
    """A Granian WSGI worker: a stream holds one of its blocking threads."""

    name = "Granian --interface wsgi"
    threaded = True
    more_room = "raise Granian's --blocking-threads"

    def __init__(self) -> None:
        found = worker_locals() or {}
        threads = found.get("blocking_threads")
        self._threads = threads if isinstance(threads, int) and threads > 0 else None
        self._handler_cell = _shutdown_cell()
        self._stopping = False
        if self._threads is not None:
            self.name = f"Granian --interface wsgi --blocking-threads {self._threads}"

    def threads(self) -> int | None:
        return self._threads

    def watch_shutdown(
        self, callback: Callable[[], None], open_streams: Callable[[], int] | None = None
    ) -> None:
        cell = self._handler_cell
        if cell is None:
            return

        def stop() -> None:
            self._stopping = True
            callback()

        relayed = cell.cell_contents
        if isinstance(relayed, _Relay):  # a second app in this worker
            relayed.callbacks.append(stop)
        else:
            cell.cell_contents = _Relay(relayed, [stop])

    def stopping(self) -> bool:
        return self._stopping

    def shutdown_note(self) -> str | None:
        if self._handler_cell is not None:
            return None
        return (
            "flask_sse_push cannot learn of Granian's shutdown in this version, and"
            " Granian waits for every open stream before a worker exits: run Granian"
            " with --workers-kill-timeout SECONDS so that a shutdown ends within that"
            " bound (clients reconnect after their retry: delay)."
        )


def _shutdown_cell() -> t.Any | None:
    """Return the closure cell holding the shutdown signal of Granian's worker, if found.

    The worker's handler (the same function for SIGINT and SIGTERM) has one free
    variable, ``signal_event``, an object with ``set()``.
    """
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not signal.getsignal(signal.SIGINT):
        return None
    code = getattr(handler, "__code__", None)
    closure = getattr(handler, "__closure__", None)
    if code is None or not closure or code.co_freevars != ("signal_event",):
        return None
    if "granian" not in str(getattr(handler, "__module__", "")):
        return None
    cell = closure[0]
    if not callable(getattr(cell.cell_contents, "set", None)):
        return None
    return cell


class _Relay:
    """Stands for Granian's shutdown signal in its handler: tells the streams first."""

    __slots__ = ("signal", "callbacks")

    def __init__(self, signal: t.Any, callbacks: list[Callable[[], None]]) -> None:
        self.signal = signal
        self.callbacks = callbacks

    def set(self) -> None:
        for callback in self.callbacks:
            callback()
        self.signal.set()

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.signal, name)
