"""Shutdown signals for servers whose main thread runs a Python loop (waitress, Werkzeug).

Such a server handles SIGTERM with the default action (the process dies at once)
and SIGINT with ``KeyboardInterrupt``: its streams are cut without the closed
line, and every client comes back after the same delay. :class:`ShutdownRelay`
takes both signals first: it ends every stream (closed line, spread
``retry:``), waits until they have been released (at most :data:`GRACE`
seconds) and a moment more for the server to send their last bytes, then sends
the same signal again, which the previous handler gets. A second signal while
it waits goes to the previous handler at once.

Python lets only the main thread install a handler, and a request runs in
another thread: each server module finds a hook its main loop calls (see
:meth:`~flask_sse_push.servers.threaded.Waitress.watch_shutdown`), and runs
:func:`install` from there.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    _Handler: t.TypeAlias = "Callable[[int, FrameType | None], t.Any] | int | signal.Handlers"

#: Seconds a shutdown waits for the streams to be released.
GRACE = 1.0

#: Seconds given to the server, after the last stream was released, to send its
#: last bytes (waitress writes from its main loop, after the request thread).
FLUSH = 0.1

SIGNALS = ("SIGTERM", "SIGINT")


class ShutdownRelay:
    """A signal handler that ends the streams before the previous handler acts.

    :param callback: starts ending every stream; runs in the signal handler.
    :param open_streams: how many streams are still open.
    :param previous: the handler each signal had, by number.
    """

    def __init__(
        self,
        callback: Callable[[], None],
        open_streams: Callable[[], int] | None,
        previous: dict[int, _Handler],
    ) -> None:
        self.callback = callback
        self.open_streams = open_streams
        self.previous = previous
        self._draining = False
        self._released = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._released or self._draining:
            self._pass_on(signum, frame)
            return
        self._draining = True
        self.callback()
        threading.Thread(
            target=self._send_again, args=(signum,), name="flask_sse_push-shutdown", daemon=True
        ).start()

    def _send_again(self, signum: int) -> None:
        deadline = time.monotonic() + GRACE
        while self.open_streams is not None and self.open_streams():
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        time.sleep(FLUSH)
        self._released = True
        os.kill(os.getpid(), signum)

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
            return
        # The default action (or ignoring it): only the kernel can take it.
        signal.signal(signum, previous)
        signal.raise_signal(signum)


def install(callback: Callable[[], None], open_streams: Callable[[], int] | None) -> bool:
    """Put a :class:`ShutdownRelay` in front of SIGTERM's and SIGINT's handlers.

    :returns: False outside the main thread, where Python allows no handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    previous: dict[int, _Handler] = {}
    for name in SIGNALS:
        number = getattr(signal, name)
        handler = signal.getsignal(number)
        # None: a handler set from C, which Python cannot call; SIG_IGN: keep it.
        if handler is not None and handler is not signal.SIG_IGN:
            previous[number] = handler
    relay = ShutdownRelay(callback, open_streams, previous)
    for number in previous:
        signal.signal(number, relay)
    return True


def on_main_loop(owner: object, method: str, action: Callable[[], object]) -> None:
    """Run ``action`` once, in the main thread, the next time it calls ``owner.method()``.

    ``method`` is one the server's main loop calls every round (at most a second
    apart): the instance attribute set here shadows it for one call.
    """
    original = getattr(owner, method)

    def once(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if threading.current_thread() is threading.main_thread():
            vars(owner).pop(method, None)
            action()
        return original(*args, **kwargs)

    setattr(owner, method, once)
