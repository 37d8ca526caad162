"""The floor under gunicorn: a WSGI stream with no framework, no broker, no queue.

Each response is a generator that sends ``: connected`` and then a keepalive
whenever a gevent ``Event`` wait times out, which is the least any WSGI SSE
server on ``gunicorn -k gevent`` keeps per open stream. It serves the idle
scenario only (it never publishes), to show what of the per-stream memory is
gunicorn's and gevent's, and what is the library's.

Run it with ``gunicorn -k gevent app_wsgi_floor:app``; ``BENCH_KEEPALIVE`` sets
the keepalive interval in seconds.
"""

from __future__ import annotations

import os
import typing as t

from gevent.event import Event

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

KEEPALIVE = float(os.environ.get("BENCH_KEEPALIVE", "15"))


def app(environ: dict[str, t.Any], start_response: Callable[..., t.Any]) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    return _stream()


def _stream() -> Iterator[bytes]:
    yield b": connected\n\n"
    quiet = Event()
    while True:
        quiet.wait(KEEPALIVE)
        yield b": keepalive\n\n"
