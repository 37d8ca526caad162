"""The floor under gunicorn: a WSGI stream with no framework, no broker, no queue.

Each response is a generator that sends ``: connected`` and then, every
keepalive interval, a keepalive, sleeping in between on a bare libev timer with
the hub switched to directly: the least any WSGI SSE server on
``gunicorn -k gevent`` can keep per open stream (a gevent ``Event`` wait costs
about 1.5 KiB more). It serves the idle scenario only (it never publishes), to
show what of the per-stream memory is gunicorn's and gevent's, and what is the
library's.

Run it with ``gunicorn -k gevent app_wsgi_floor:app``; ``BENCH_KEEPALIVE`` sets
the keepalive interval in seconds.
"""

from __future__ import annotations

import os
import typing as t

from gevent import get_hub
from greenlet import getcurrent

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

KEEPALIVE = float(os.environ.get("BENCH_KEEPALIVE", "15"))


def app(environ: dict[str, t.Any], start_response: Callable[..., t.Any]) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    return _stream()


def _stream() -> Iterator[bytes]:
    yield b": connected\n\n"
    hub = get_hub()
    wake = getcurrent().switch
    while True:
        # A fresh one-shot timer per wait, armed only while waiting, so it cannot
        # fire into a pending write.
        timer = hub.loop.timer(KEEPALIVE)
        timer.start(wake)
        try:
            hub.switch()
        finally:
            timer.close()
        yield b": keepalive\n\n"
