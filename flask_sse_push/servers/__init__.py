"""Everything that knows a particular server, behind :class:`~.base.Server`.

- :mod:`.gunicorn`: gunicorn's workers, and this package's worker class
  ``flask_sse_push.servers.gunicorn.GeventWorker``, which carries the fast path;
- :mod:`.threaded`: waitress and Werkzeug's development server;
- :mod:`.gevent`: what any gevent server shares (killable sources);
- :mod:`.base`: the interface, which is also the plain fallback.

:func:`detect` picks one for a request. Nothing else in the package imports
gunicorn or gevent: code that needs a primitive of the OS thread whatever gevent
patched (the Redis broker) takes :func:`os_lock`, :func:`os_thread_local` and
:func:`thread_bound_sockets` from here.
"""

from __future__ import annotations

import typing as t

from .base import Server
from .gevent import os_lock, os_thread_local, thread_bound_sockets

__all__ = [
    "Server",
    "detect",
    "detect_process",
    "os_lock",
    "os_thread_local",
    "thread_bound_sockets",
]

if t.TYPE_CHECKING:
    from collections.abc import Mapping


def detect_process() -> Server | None:
    """Return the server of this process, if it can be known before any request.

    Only a gunicorn worker can (through its signal handlers); waitress and
    Werkzeug are recognized at the first request (:func:`detect`).
    """
    from .gunicorn import detect as detect_gunicorn

    return detect_gunicorn()


def detect(environ: Mapping[str, t.Any]) -> Server:
    """Return the server that handles ``environ``; the plain fallback if it is unknown."""
    software = str(environ.get("SERVER_SOFTWARE", ""))
    if software.startswith("gunicorn"):
        found = detect_process()
        if found is not None:
            return found
    elif software.startswith("waitress"):
        from .threaded import Waitress

        return Waitress(environ)
    elif software.startswith("Werkzeug"):
        from .threaded import Werkzeug

        return Werkzeug(environ)
    from .gevent import GeventServer, monkey_patched

    return GeventServer() if monkey_patched() else Server()
