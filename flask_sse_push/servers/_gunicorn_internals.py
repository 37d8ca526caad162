"""The private parts of gunicorn and gevent that the worker class and the fast path use.

The worker class (:mod:`._gevent_worker`) hands the fast path (:mod:`.fastpath`)
the client's socket and gunicorn's response object; the fast path then writes
chunks itself. For that it needs, from objects neither project documents:

- gevent's cooperative socket: the OS socket it wraps (``_sock``), for a
  non-blocking ``send`` that does not wait on the hub;
- gunicorn's ``Response`` (``gunicorn.http.wsgi``): whether it frames the body
  as chunks (``chunked``), the byte count its access log reports (``sent``),
  the length the application declared (``response_length``), and, through
  ``start_response.__self__``, the response itself; for a stream that parks,
  its ``write`` (the headers and the first chunk), and the ``status``,
  ``headers`` and request (``req``, whose ``headers`` it reads) of its
  access-log line;
- gevent's hub: the OS thread it runs in (``thread_ident``);
- gunicorn's ``GeventResponse`` (``gunicorn.workers.ggevent``), the stand-in its
  own workers give the access log, for the line of a stream that parked.

They are all named here, and :func:`self_check` looks for them on real objects
when a worker starts: if a gunicorn or gevent release drops or renames one, the
worker logs one warning and serves every stream on the ordinary path, instead
of failing mid-stream.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    import socket
    from collections.abc import Callable
    from datetime import timedelta

#: Attributes of gevent's socket the fast path reads.
SOCKET_ATTRIBUTES: tuple[str, ...] = ("_sock",)
#: Attributes of gunicorn's ``Response`` the worker and the fast path read or write.
#: The fan-out's hot loop adds to ``sent`` inline (``response.sent += size``), to
#: spare a call per stream per pass; it is checked here all the same.
RESPONSE_ATTRIBUTES: tuple[str, ...] = (
    "chunked",
    "sent",
    "response_length",
    "start_response",
    "write",
    "status",
    "headers",
    "req",
)
#: Attributes of gevent's hub the fast path reads.
HUB_ATTRIBUTES: tuple[str, ...] = ("thread_ident",)
#: Read where present: gunicorn releases before it never omitted a GET's body.
OMITS_BODY = "_omits_body"


def missing(sock: object, response: object, hub: object) -> list[str]:
    """Return the attributes the fast path needs that these objects lack, as
    ``"kind.name"`` strings; empty when all are there.

    :param sock: a gevent socket; :param response: a gunicorn ``Response``;
    :param hub: a gevent hub.
    """
    found = []
    for kind, owner, names in (
        ("socket", sock, SOCKET_ATTRIBUTES),
        ("Response", response, RESPONSE_ATTRIBUTES),
        ("Hub", hub, HUB_ATTRIBUTES),
    ):
        found += [f"{kind}.{name}" for name in names if not hasattr(owner, name)]
    return found


def self_check(cfg: object = None) -> str | None:
    """Look for every attribute the fast path needs on a real gevent socket, gunicorn
    ``Response`` and gevent hub; return the warning to log, or ``None`` if all are there.

    Call it in a worker process, after gevent's monkey patching; it opens (and
    closes) one socket.
    """
    from gevent import get_hub
    from gevent import socket as gsocket
    from gunicorn.http.wsgi import Response  # type: ignore[import-untyped]
    from gunicorn.workers import ggevent  # type: ignore[import-untyped]

    sock = gsocket.socket()
    try:
        lacking = missing(sock, Response(None, sock, cfg), get_hub())
    finally:
        sock.close()
    if not hasattr(ggevent, "GeventResponse"):
        lacking.append("ggevent.GeventResponse")
    if not lacking:
        return None
    return (
        "flask_sse_push's worker class serves streams without direct writes: this"
        f" gunicorn or gevent has no {', '.join(lacking)}, which the fast path needs."
        " Streams work as under gunicorn -k gevent; to get direct writes back, install"
        " the gunicorn and gevent releases this flask_sse_push release supports, or a"
        " flask_sse_push release that supports yours."
    )


def raw_socket(sock: t.Any) -> socket.socket:
    """Return the OS socket a gevent socket wraps."""
    raw: socket.socket = sock._sock
    return raw


def response_of(start_response: Callable[..., t.Any]) -> t.Any | None:
    """Return gunicorn's ``Response`` whose bound ``start_response`` this is, or ``None``."""
    return getattr(start_response, "__self__", None)


def declared_length(response: t.Any) -> int | None:
    """Return the ``Content-Length`` the application gave the response, if any."""
    length: int | None = response.response_length
    return length


def omits_body(response: t.Any) -> bool:
    """Return whether gunicorn will send no body for this response (a 204 or 304)."""
    return bool(getattr(response, OMITS_BODY, False))


def is_chunked(response: t.Any) -> bool:
    """Return whether gunicorn frames this response's body as chunks."""
    return bool(response.chunked)


def hub_thread(hub: t.Any) -> int:
    """Return the ident of the OS thread a gevent hub runs in."""
    ident: int = hub.thread_ident
    return ident


def access_fields(response: t.Any) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """Return what gunicorn's access log reads of a response and its request: the
    status line, the response headers and the request headers."""
    request_headers = getattr(response.req, "headers", None) or []
    return response.status, response.headers, request_headers


def access_log_enabled(log: t.Any) -> bool:
    """Return whether gunicorn's logger writes access-log lines (as its own workers ask)."""
    return bool(getattr(log, "access_log_enabled", True))


def log_access(
    log: t.Any,
    fields: tuple[str, list[tuple[str, str]], list[tuple[str, str]]],
    sent: int,
    environ: dict[str, str],
    duration: timedelta,
) -> None:
    """Write one access-log line through gunicorn's logger for a response that ended.

    :param fields: what :func:`access_fields` returned for the response.
    :param sent: the body bytes written (``%(B)s``).
    :param duration: how long the request took (``%(D)s``, ``%(L)s``...).
    """
    from gunicorn.workers.ggevent import GeventResponse  # type: ignore[import-untyped]

    status, headers, request_headers = fields
    log.access(GeventResponse(status, headers, sent), request_headers, environ, duration)
