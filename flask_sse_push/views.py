"""The blueprint and its streaming view.

Everything the stream needs is read from the request here, before the response
starts, so no request or application context stays alive for the stream's
lifetime (a pinned context would also pin whatever it holds, like a DB session).
"""

from __future__ import annotations

import logging
import typing as t

from flask import Blueprint, Response, current_app, request

from .encoding import encode_comment
from .exceptions import BrokerError, ChannelError, LastEventIDError
from .stream import closing_chunk, event_stream
from .validation import check_channels, check_last_event_id

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .extension import _State

#: Headers on every stream. There is deliberately no ``Connection`` header:
#: HTTP/2 forbids it, and some clients then drop the response.
STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}

CONTENT_TYPE = "text/event-stream; charset=utf-8"

logger = logging.getLogger("flask_sse_push")


def sse_response(chunks: Iterable[bytes], on_close: Callable[[], object] | None = None) -> Response:
    """Wrap encoded chunks in a streaming response with the SSE headers.

    ``on_close`` runs when the server closes the response, even if the body was
    never iterated (a generator that never started never runs its ``finally``).
    """
    response = Response(chunks, status=200, content_type=CONTENT_TYPE)
    response.headers.update(STREAM_HEADERS)
    if on_close is not None:
        response.call_on_close(on_close)
    return response


def transient_response(reason: str, retry: int | None) -> Response:
    """Answer ``200`` with a ``retry:`` hint and an immediate end.

    A 5xx would make ``EventSource`` give up for good; this makes it come back.
    """
    body = encode_comment(f"unavailable: {reason}").encode()
    return sse_response([body + closing_chunk(reason, retry or 1000)])


def _bad_request(message: str) -> Response:
    return Response(message + "\n", status=400, content_type="text/plain; charset=utf-8")


def request_last_event_id() -> str | None:
    """Return the client's resume cursor, from the header or the query string.

    The ``Last-Event-ID`` header wins: it is what the browser sends on reconnect,
    while ``?last_event_id=`` stays at its first-connect value in the URL.

    :raises LastEventIDError: the value is not valid UTF-8, too long, or has a
        character no event id can have.
    """
    raw = request.headers.get("Last-Event-ID")
    if raw is not None:
        try:
            # WSGI hands headers over as latin-1; browsers send UTF-8.
            raw = raw.encode("latin-1").decode("utf-8")
        except UnicodeError as exc:
            raise LastEventIDError("Last-Event-ID is not valid UTF-8.") from exc
    else:
        raw = request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    return check_last_event_id(raw)


def _state() -> _State:
    from .extension import get_state

    return get_state(current_app)


def stream_view() -> Response:
    """Stream the channels named by ``?channel=`` (default ``default``)."""
    state = _state()
    try:
        channels = check_channels(request.args.getlist("channel") or ["default"])
        last_event_id = request_last_event_id()
    except (ChannelError, LastEventIDError) as exc:
        return _bad_request(str(exc))
    try:
        subscription = state.broker.subscribe(channels, last_event_id=last_event_id)
    except BrokerError as exc:
        logger.warning("Broker unavailable, asking the client to retry: %s", exc)
        return transient_response("broker unavailable", state.retry)
    chunks = event_stream(subscription, keepalive=state.keepalive, retry=state.retry)
    return sse_response(chunks, subscription.close)


def make_blueprint(url_prefix: str) -> Blueprint:
    """Return a blueprint serving :func:`stream_view` at ``url_prefix``."""
    blueprint = Blueprint("sse_push", __name__, url_prefix=url_prefix)
    blueprint.add_url_rule("", "stream", stream_view, methods=["GET"])
    return blueprint
