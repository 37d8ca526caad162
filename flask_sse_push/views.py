"""The blueprint and its streaming view.

Everything the stream needs is read from the request here, before the response
starts, so no request or application context stays alive for the stream's
lifetime (a pinned context would also pin whatever it holds, like a DB session).
"""

from __future__ import annotations

import logging
import os
import socket
import typing as t

from flask import Blueprint, Response, current_app, request

from .client import client_script_view
from .connections import TOO_MANY, StreamInfo
from .encoding import encode_comment
from .exceptions import BrokerError, ChannelError
from .grip.mode import hold_answer
from .publish_http import publish_view
from .runtime import get_runtime
from .servers.base import StreamBody
from .session_scope import session_key_view
from .sockets import tune
from .stream import (
    STOP_ID,
    BodyChunks,
    closing_chunk,
    jittered_lifetime,
    reconnect_retry,
)
from .validation import check_channels, decode_header_cursor, resume_cursor

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .brokers.base import Subscription
    from .connections import LiveStream
    from .runtime import Runtime
    from .servers.base import Attachable, ParkableSource

#: Headers on every stream. There is deliberately no ``Connection`` header:
#: HTTP/2 forbids it, and some clients then drop the response.
STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

CONTENT_TYPE = "text/event-stream; charset=utf-8"

logger = logging.getLogger("flask_sse_push")


def sse_response(
    chunks: Iterable[bytes] | Callable[[], Iterator[bytes]],
    on_close: Callable[[], object] | None = None,
    attachable: Attachable | None = None,
    source: ParkableSource | None = None,
) -> Response:
    """Wrap encoded chunks in a streaming response with the SSE headers.

    ``on_close`` runs when the server closes the response, even if the body was
    never iterated (a generator that never started never runs its ``finally``).
    ``attachable`` gets a server's offer to carry the stream itself, and a
    server that parks streams drives ``source`` instead of iterating the
    chunks (see :class:`~flask_sse_push.servers.base.StreamBody`).
    """
    # direct_passthrough hands StreamBody to the server as is: no per-chunk
    # re-encoding generator, and close() reaches StreamBody without passing
    # through a generator that may be running in another thread.
    response = Response(
        StreamBody(chunks if callable(chunks) else iter(chunks), on_close, attachable, source),
        status=200,
        content_type=CONTENT_TYPE,
        direct_passthrough=True,
    )
    response.headers.update(STREAM_HEADERS)
    return response


def transient_response(reason: str, retry: int | None) -> Response:
    """Answer ``200`` with a ``retry:`` hint and an immediate end.

    A 5xx would make ``EventSource`` give up for good; this makes it come back.
    """
    body = encode_comment(f"unavailable: {reason}").encode()
    return sse_response([body + closing_chunk(reason, reconnect_retry(retry))])


def _bad_request(message: str) -> Response:
    return Response(message + "\n", status=400, content_type="text/plain; charset=utf-8")


def _forbidden(message: str) -> Response:
    return Response(message + "\n", status=403, content_type="text/plain; charset=utf-8")


def request_last_event_id() -> str | None:
    """Return the client's resume cursor, from the header or the query string.

    The ``Last-Event-ID`` header wins: it is what the browser sends on reconnect,
    while ``?last_event_id=`` stays at its first-connect value in the URL. The
    header is read as UTF-8 if its bytes are UTF-8, else as Latin-1 (see
    :func:`~flask_sse_push.validation.decode_header_cursor`).

    Exported as :func:`flask_sse_push.last_event_id`, for views that resume an
    application generator given to :meth:`SSEPush.stream`.

    Never raises: any answer but ``200`` would stop the client's
    ``EventSource`` for good. A value that cannot be an event id (longer than
    :data:`~flask_sse_push.validation.MAX_EVENT_ID_LENGTH` characters, or with a
    control character) comes back as
    :data:`~flask_sse_push.validation.INVALID_CURSOR`, which matches no event,
    so the client is treated like any client with an unknown cursor.

    :returns: ``None`` when the client sent no cursor (or an empty one).

    .. versionadded:: 0.1
    """
    raw = request.headers.get("Last-Event-ID")
    if raw is not None:
        raw = decode_header_cursor(raw)
    else:
        raw = request.args.get("last_event_id")
    return resume_cursor(raw)


def _state() -> Runtime:
    return get_runtime(current_app)


def open_stream(
    runtime: Runtime,
    info: StreamInfo,
    subscribe: Callable[[], Subscription],
    *,
    lifetime: float | None = None,
) -> Response:
    """Accept a stream and answer with it, or with the transient answer.

    A worker that is full or shutting down, a client that holds its share of
    the worker's streams (``SSE_PUSH_MAX_STREAMS_PER_CLIENT``), or a broker
    that cannot be reached, gets the transient answer (``200``, ``retry:``,
    end) instead.
    """
    live = accept(runtime, info, subscribe)
    if isinstance(live, str):
        return transient_response(live, runtime.settings.retry)
    return stream_response(runtime, live, lifetime=lifetime)


def _behind_unfixed_proxy() -> bool:
    """Whether the request came through a proxy whose forwarded address nobody applied."""
    # ProxyFix keeps the original address here once it has replaced it.
    return "X-Forwarded-For" in request.headers and "werkzeug.proxy_fix.orig" not in request.environ


def accept(
    runtime: Runtime, info: StreamInfo, subscribe: Callable[[], Subscription]
) -> LiveStream | str:
    """Register a stream for this request and subscribe it; or say why it cannot be."""
    registry = runtime.registry
    server = runtime.server
    environ = request.environ
    live = registry.open(info, server.socket(environ), server.gone_check(environ))
    if isinstance(live, str):
        if live == TOO_MANY and not runtime.proxy_hint_logged and _behind_unfixed_proxy():
            runtime.proxy_hint_logged = True
            logger.warning(
                "Refused a stream: %d streams from %s already. The request carries"
                " X-Forwarded-For, so %s is likely a proxy and all its clients count as one."
                " Apply werkzeug.middleware.proxy_fix.ProxyFix with x_for set to the number"
                " of proxies in front of the app, so each client counts by its own address.",
                registry.max_per_client,
                info.remote_addr,
                info.remote_addr,
            )
        return live
    try:
        live.set_subscription(subscribe())
    except BrokerError as exc:
        registry.close(live)
        logger.warning("Broker unavailable, asking the client to retry: %s", exc)
        return "broker unavailable"
    except BaseException:
        registry.close(live)
        raise
    runtime.metrics.connected(info.channels, replay=info.last_event_id is not None)
    runtime.presence.opened(info)
    logger.info(
        "SSE stream opened: channels=%s remote=%s resume=%s",
        ",".join(info.channels) or "-",
        info.remote_addr,
        info.last_event_id is not None,
    )
    return live


def stream_response(runtime: Runtime, live: LiveStream, *, lifetime: float | None) -> Response:
    """Return the response that carries an accepted stream, and release it when it ends.

    Where the server exposes the client socket it gets TCP keepalive and
    ``TCP_USER_TIMEOUT``, and is closed once a stream ends by itself, so the
    reconnect can land on another worker.
    """
    settings = runtime.settings
    subscription = live.subscription
    assert subscription is not None
    if live.socket is not None:
        tune(live.socket, settings.keepalive, settings.send_timeout)
    body = BodyChunks(
        subscription,
        live,
        keepalive=settings.keepalive,
        retry=settings.retry,
        lifetime=jittered_lifetime(lifetime),
        metrics=runtime.metrics,
    )
    if settings.direct_writes:
        live.allow_direct_writes(runtime.offer)
    return sse_response(body.chunks, StreamEnd(runtime, live), live, body)


class StreamEnd:
    """What runs once the server is done with a stream: release it, count it, log it.

    A small object rather than a closure: one is kept for every open stream.
    """

    __slots__ = ("_runtime", "_live", "_reported")

    def __init__(self, runtime: Runtime, live: LiveStream) -> None:
        self._runtime = runtime
        self._live = live
        self._reported = False

    def __call__(self) -> None:
        runtime = self._runtime
        live = self._live
        subscription = live.subscription
        if subscription is not None:
            subscription.close()
        runtime.registry.close(live)
        if live.finished and runtime.server.cut_when_finished:
            live.cut_connection()
        if self._reported:
            return
        self._reported = True
        reason = live.final_reason()
        runtime.metrics.disconnected(live.info.channels, reason)
        runtime.presence.closed(live.info)
        level = logging.WARNING if reason == "overflow" else logging.INFO
        logger.log(
            level,
            "SSE stream closed: channels=%s remote=%s reason=%s",
            ",".join(live.info.channels) or "-",
            live.info.remote_addr,
            reason,
        )


def stream_view() -> Response:
    """Stream the channels named by ``?channel=`` (default ``default``).

    The answers, in order: ``400`` for a bad channel name; ``204`` to
    a client whose stream was revoked (its cursor is :data:`STOP_ID`); ``403``
    when an :meth:`SSEPush.authorize` hook refuses a channel; then the stream,
    or the transient answer. A cursor never causes an error status: one that
    matches nothing gets a ``reset`` event before the live stream.
    """
    state = _state()
    try:
        channels = check_channels(request.args.getlist("channel") or ["default"])
    except ChannelError as exc:
        return _bad_request(str(exc))
    last_event_id = request_last_event_id()
    if last_event_id == STOP_ID:
        return Response(status=204)
    hooks = state.hooks
    for channel in channels:
        for authorize in hooks.authorizers:
            if not authorize(channel):
                return _forbidden(f"Not allowed to subscribe to channel {channel!r}.")
    identity = None if hooks.identify is None else hooks.identify()
    held = hold_answer(state, channels, last_event_id, identity)
    if held is not None:  # GRIP mode: the proxy holds the stream
        return held
    info = StreamInfo(
        channels=tuple(channels),
        identity=identity,
        remote_addr=request.remote_addr,
        last_event_id=last_event_id,
    )
    return open_stream(
        state,
        info,
        lambda: state.broker.subscribe(channels, last_event_id=last_event_id),
        lifetime=state.settings.max_lifetime,
    )


def health_view() -> tuple[dict[str, t.Any], int]:
    """``200`` when the broker can work, ``503`` when it cannot.

    The broker is reachable and its credentials let it publish, subscribe and
    replay (:meth:`~flask_sse_push.brokers.base.Broker.check`). Why it cannot
    is logged and reported by :meth:`SSEPush.stats` as ``broker_problem``, never
    in this answer, which anyone who can reach the endpoint reads: it names
    hosts and users.

    This is for load balancers and orchestrators, not for ``EventSource``: the
    stream itself never answers 5xx. The answer is the worker's own, and says
    which worker gave it (``worker``: ``pid``, ``host`` and its ``name`` on the
    control channel); ``sse.stats(scope="deployment")`` adds up every worker.
    """
    state = _state()
    # Which worker answered: the figures are this process' own.
    worker = {"pid": os.getpid(), "host": socket.gethostname(), "name": state.control.name}
    if state.check_broker() is not None:
        # The reason names hosts and users: it goes to the log and stats(), not here.
        return {"status": "unavailable", "worker": worker}, 503
    return {"status": "ok", "clients_connected": len(state.registry), "worker": worker}, 200


def make_blueprint(url_prefix: str, cors_origins: list[str] | None = None) -> Blueprint:
    """Return a blueprint serving :func:`stream_view` at ``url_prefix``, its
    health check at ``/health``, the browser client at ``/client.js``,
    publishing over HTTP at ``/publish`` (see :mod:`flask_sse_push.publish_http`)
    and the page's session key at ``/session-key`` (see
    :mod:`flask_sse_push.session_scope`).

    :param cors_origins: origins allowed to open streams from other sites.
    """
    blueprint = Blueprint("sse_push", __name__, url_prefix=url_prefix)
    blueprint.add_url_rule("", "stream", stream_view, methods=["GET"])
    blueprint.add_url_rule("/health", "health", health_view, methods=["GET"])
    blueprint.add_url_rule("/client.js", "client_js", client_script_view, methods=["GET"])
    blueprint.add_url_rule("/publish", "publish", publish_view, methods=["POST"])
    blueprint.add_url_rule("/session-key", "session_key", session_key_view, methods=["GET"])
    if cors_origins:
        from .cors import apply_cors

        apply_cors(blueprint, cors_origins)
    return blueprint
