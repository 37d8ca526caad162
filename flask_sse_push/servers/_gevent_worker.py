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

import _socket
from datetime import datetime

from ._gunicorn_internals import (
    access_fields,
    access_log_enabled,
    declared_length,
    log_access,
    omits_body,
    response_of,
    self_check,
)
from .base import StreamBody
from .fastpath import Carrier
from .parking import ParkedStream, ParkingTable

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .fastpath import DirectWriter


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
    return Carrier(sock, response, datetime.now(), environ)


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


class _AccessLine:
    """The fields of a parked stream's access-log line, kept until it ends.

    Only what gunicorn's log formatter reads: the status and headers of the
    response, the request's headers, and the environ's string values (the WSGI
    objects in it, and the Flask request, are let go).
    """

    __slots__ = ("log", "fields", "environ", "started")

    def __init__(self, log: t.Any, response: t.Any, environ: dict[str, t.Any], started: datetime):
        self.log = log
        self.fields = access_fields(response)
        self.environ = {key: value for key, value in environ.items() if type(value) is str}
        self.started = started

    def write(self, sent: int) -> None:
        log_access(self.log, self.fields, sent, self.environ, datetime.now() - self.started)


class GeventWorker(_GunicornGeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, carrying stream bodies it gets unwrapped directly.

    .. code-block:: text

        gunicorn -k flask_sse_push.servers.gunicorn.GeventWorker -w 4 'app:create_app()'

    A stream it carries that waits for events is *parked*
    (see the deploying guide, "Parked streams"): its request greenlet returns, and
    the worker holds the stream in a small object until it ends, then writes
    its access-log line (with the status, bytes and duration of the whole
    stream) and closes the connection. gunicorn's ``post_request`` hook runs
    when the stream parks.

    .. versionadded:: 0.1
    """

    #: Read by :mod:`flask_sse_push.servers.gunicorn` to offer the fast path;
    #: off in a worker whose gunicorn or gevent lacks what the fast path needs.
    carries_stream_bodies = True
    #: The streams this worker holds without a greenlet; set in each worker.
    parking: ParkingTable | None = None

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
        self.parking = ParkingTable()

    def is_already_handled(self, respiter: object) -> bool:
        if type(respiter) is StreamBody and self._park(respiter):
            return True
        return bool(super().is_already_handled(respiter))

    def handle_request(self, listener_name: t.Any, req: t.Any, sock: t.Any, addr: t.Any) -> t.Any:
        handled = super().handle_request(listener_name, req, sock, addr)
        if sock.fileno() < 0:
            # A parked stream took the connection's descriptor (the socket is
            # detached): end this connection's request loop. Closing a
            # detached socket closes nothing.
            raise StopIteration
        return handled

    def run(self) -> None:
        super().run()
        parking = self.parking
        if parking is not None and len(parking):
            # gunicorn waited only for requests that hold a greenlet; the
            # monitor is ending the parked streams, which write their last bytes.
            left = parking.drain(max(1.0, float(self.cfg.graceful_timeout)))
            if left:
                self.log.warning("Closed %d parked stream(s) at the graceful timeout.", left)

    def _park(self, body: StreamBody) -> bool:
        """Write a stream's first chunk, then hold it without this greenlet, if it can
        park; return whether it did (the stream has ended, or is parked)."""
        carrier = body.take_carrier()
        source = body.source
        parking = self.parking
        if not isinstance(carrier, Carrier) or source is None or parking is None:
            return False
        if source.opened or not source.can_park():
            return False
        live = source.live
        writer = t.cast("DirectWriter | None", live.writer)
        response = carrier.response
        try:
            response.write(source.opening())  # the headers, then the first chunk
        except OSError:
            body.close()
            raise
        live.wrote()
        if writer is None or not source.hand_to_writer():
            return False  # gunicorn iterates the body, from the second chunk on
        raw = _socket.socket(fileno=carrier.sock.detach())
        raw.setblocking(False)
        live.moved_to(raw)
        access = None
        if access_log_enabled(self.log) and carrier.started is not None:
            access = _AccessLine(self.log, response, carrier.environ or {}, carrier.started)
        stream = ParkedStream(parking, body, source, writer, raw, response.sent, access)
        writer.hand_over(raw, stream)
        parking.adopt(stream)
        return True
