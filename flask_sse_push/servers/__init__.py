"""Everything that knows a particular server, behind :class:`~.base.Server`.

- :mod:`.gunicorn`: gunicorn's workers, and this package's worker class
  ``flask_sse_push.servers.gunicorn.GeventWorker``, which carries the fast path;
- :mod:`.threaded`: waitress and Werkzeug's development server;
- :mod:`.uwsgi`: uWSGI, in its threads mode and its gevent loop engine;
- :mod:`.granian`: Granian's WSGI interface;
- :mod:`.relay`: shutdown signals where the server's main loop runs Python;
- :mod:`.gevent`: what any gevent server shares (killable sources);
- :mod:`.base`: the interface, which is also the plain fallback.

:func:`detect` picks one for a request: the family the application names
(``SSE_PUSH_SERVER``, one of :data:`FAMILIES`), or else the one it recognizes.
Nothing else in the package imports gunicorn or gevent: code that needs a
primitive of the OS thread whatever gevent patched (the Redis broker) takes
:func:`os_lock`, :func:`os_thread_local` and :func:`thread_bound_sockets` from here.
"""

from __future__ import annotations

import typing as t

from .base import Server
from .gevent import os_lock, os_thread_local, thread_bound_sockets

__all__ = [
    "FAMILIES",
    "Server",
    "detect",
    "detect_process",
    "os_lock",
    "os_thread_local",
    "thread_bound_sockets",
]

if t.TYPE_CHECKING:
    from collections.abc import Mapping


#: The server families ``SSE_PUSH_SERVER`` may name; ``"detect"`` recognizes it.
#: ``"gevent"`` is any other server whose requests are greenlets of a
#: monkey-patched process; ``"plain"`` is a server that says nothing (no socket,
#: no capacity, no shutdown notice).
FAMILIES = ("detect", "gunicorn", "uwsgi", "granian", "waitress", "werkzeug", "gevent", "plain")


def detect_process(family: str = "detect") -> Server | None:
    """Return the server of this process, if it can be known before any request.

    Only a gunicorn worker can (through its signal handlers); the others are
    recognized at the first request (:func:`detect`).
    """
    if family not in ("detect", "gunicorn"):
        return None
    from .gunicorn import detect as detect_gunicorn

    return detect_gunicorn()


def detect(environ: Mapping[str, t.Any], family: str = "detect") -> Server | None:
    """Return the server that handles ``environ``: the one of ``family``, or the one
    recognized; the plain fallback if none is.

    :returns: ``None`` when ``family`` is named but this is not that server.
    """
    if family == "detect":
        for name in ("gunicorn", "uwsgi", "granian", "waitress", "werkzeug"):
            found = _family(name, environ, named=False)
            if found is not None:
                return found
        from .gevent import GeventServer, monkey_patched

        return GeventServer() if monkey_patched() else Server()
    return _family(family, environ, named=True)


def _family(name: str, environ: Mapping[str, t.Any], *, named: bool) -> Server | None:
    """The server of family ``name`` for ``environ``, if it is that one.

    :param named: the application named the family, so its mark in the environ
        (``SERVER_SOFTWARE``, which a proxy or middleware may rewrite) is not required.
    """
    software = str(environ.get("SERVER_SOFTWARE", ""))
    if name == "gunicorn":
        return detect_process() if named or software.startswith("gunicorn") else None
    if name == "uwsgi":
        from . import uwsgi

        return uwsgi.detect(None if named else environ)
    if name == "granian":
        from .granian import Granian

        return Granian() if named or software.startswith("Granian") else None
    if name in ("waitress", "werkzeug"):
        from .threaded import Waitress, Werkzeug

        if name == "waitress" and (named or software.startswith("waitress")):
            return Waitress(environ)
        if name == "werkzeug" and (named or software.startswith("Werkzeug")):
            return Werkzeug(environ)
        return None
    if name == "gevent":
        from .gevent import GeventServer, monkey_patched

        return GeventServer() if monkey_patched() else None
    if name == "plain":
        return Server()
    raise ValueError(f"Unknown server family {name!r}; choose one of {', '.join(FAMILIES)}.")
