"""The gunicorn worker class that carries streams itself.

Name it as ``-k flask_sse_push.servers.gunicorn.GeventWorker``.

It is gunicorn's gevent worker with one addition. It calls the application as
the outermost WSGI layer, so it sees exactly what reaches the server: when that
is a stream's :class:`~flask_sse_push.servers.base.StreamBody`, unwrapped by any
middleware, on a plain-text HTTP/1.x ``GET``, it attaches a
:class:`~flask_sse_push.servers.fastpath.Carrier` holding the client socket and
gunicorn's response object. The fast path then writes through that carrier,
framed as the response frames a chunk and added to the byte count the access
log reports (``%(B)s``). Anything else, a gzip middleware's iterator for one, is
served exactly as gunicorn's own gevent worker serves it.
"""

from __future__ import annotations

import typing as t

try:
    from gunicorn.workers.ggevent import (  # type: ignore[import-untyped]
        GeventWorker as _GunicornGeventWorker,
    )
except (ImportError, RuntimeError) as exc:  # gunicorn raises RuntimeError for gevent
    # gunicorn's own message names neither the package nor the fix.
    raise RuntimeError(
        "flask_sse_push.servers.gunicorn.GeventWorker needs gunicorn's gevent worker,"
        " which needs gevent 24.10.1 or newer. Install the gevent extra:"
        " pip install 'flask-sse-push[gevent]' (from a checkout: pip install -e"
        f" '.[gevent]'). The import failed with: {exc}"
    ) from exc

from ._gunicorn_internals import declared_length, omits_body, response_of, self_check
from .base import StreamBody
from .fastpath import Carrier

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable


def _carrier(
    environ: dict[str, t.Any], start_response: Callable[..., t.Any], cfg: t.Any
) -> Carrier | None:
    """Return a carrier for this response, if the fast path can own its bytes."""
    if environ.get("REQUEST_METHOD") != "GET" or getattr(cfg, "is_ssl", False):
        return None
    if environ.get("SERVER_PROTOCOL") not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    if getattr(cfg, "protocol", "http") != "http":
        return None
    sock = environ.get("gunicorn.socket")
    kind = type(sock)
    # Exactly gevent's socket: its SSLSocket subclass encrypts in send().
    if kind.__name__ != "socket" or not kind.__module__.startswith("gevent."):
        return None
    response = response_of(start_response)
    if response is None or declared_length(response) is not None:
        return None
    if omits_body(response):
        return None
    return Carrier(sock, response)


class _Outermost:
    """The application as the worker calls it, outside every middleware."""

    __slots__ = ("app", "cfg")

    def __init__(self, app: Callable[..., Iterable[bytes]], cfg: t.Any) -> None:
        self.app = app
        self.cfg = cfg

    def __call__(
        self, environ: dict[str, t.Any], start_response: Callable[..., t.Any]
    ) -> Iterable[bytes]:
        result = self.app(environ, start_response)
        if type(result) is StreamBody:
            carrier = _carrier(environ, start_response, self.cfg)
            if carrier is not None:
                result.attach(carrier)
        return result


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, carrying stream bodies it gets unwrapped directly.

    .. code-block:: text

        gunicorn -k flask_sse_push.servers.gunicorn.GeventWorker -w 4 'app:create_app()'

    .. versionadded:: 0.1
    """

    #: Read by :mod:`flask_sse_push.servers.gunicorn` to offer the fast path;
    #: off in a worker whose gunicorn or gevent lacks what the fast path needs.
    carries_stream_bodies = True

    def load_wsgi(self) -> None:
        super().load_wsgi()
        warning = self_check(self.cfg)
        if warning is not None:
            # Once per worker, before any stream: streams take gunicorn's own path.
            self.log.warning(warning)
            self.carries_stream_bodies = False
            return
        app: Callable[..., Iterable[bytes]] = self.wsgi  # type: ignore[has-type]
        self.wsgi = _Outermost(app, self.cfg)
