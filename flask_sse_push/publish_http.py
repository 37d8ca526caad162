"""Publishing over HTTP, for programs that are not Python: ``POST <prefix>/publish``.

Off unless the app sets ``SSE_PUSH_PUBLISH_TOKEN`` or registers an
:meth:`SSEPush.authorize_publish <flask_sse_push.SSEPush.authorize_publish>`
hook; until then the endpoint answers ``404``. The body is JSON: one event
``{"channel", "data", "event", "id", "retry"}`` or a list of them, each with the
same checks as :meth:`SSEPush.publish <flask_sse_push.SSEPush.publish>`
(``channel`` defaults to ``"default"``; ``data`` is required, and anything but
a string is sent as its JSON). Every event is checked before any is published.

Answers:

- ``200`` ``{"ids": [...]}``, the ids in the order given;
- ``400`` ``{"error": ..., "field": ...}`` naming the bad field, such as
  ``"[2].retry"`` in a list, or ``"body"``;
- ``401`` (no ``Authorization: Bearer`` header) or ``403`` (a wrong token, or
  a hook said no), when a token is set; a hook may ``abort(401)`` itself;
- ``413`` for a body over ``SSE_PUSH_PUBLISH_MAX_BYTES``;
- ``415`` for a body that is not ``application/json`` (which also keeps
  browsers' cross-site form posts out: they cannot send that type without a
  CORS preflight, which this endpoint never grants);
- ``503`` when the broker cannot take the events (some may have been published
  then: their ids are in ``ids``).

The token is compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import json
import logging
import typing as t

from flask import Response, current_app, jsonify, request

from .data import encode_data
from .event import ServerSentEvent
from .exceptions import BrokerError
from .runtime import get_runtime
from .validation import check_channel, check_published_event

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .runtime import Settings

logger = logging.getLogger("flask_sse_push")

#: The fields an event may have in the body.
FIELDS = frozenset({"channel", "data", "event", "id", "retry"})


class BadField(Exception):
    """A field of the body is wrong: ``args`` are the message and the field."""


def _error(
    status: int,
    message: str,
    field: str | None = None,
    *,
    ids: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, t.Any] = {"error": message}
    if field is not None:
        body["field"] = field
    if ids is not None:
        body["ids"] = ids
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _token_problem(token: str) -> Response | None:
    header = request.headers.get("Authorization")
    if header is None:
        return _error(
            401,
            "Send the publish token as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="sse-publish"'},
        )
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return _error(403, "The publish token is not valid.")
    return None


def _read_body(limit: int) -> bytes | None:
    """The body, or ``None`` if it is larger than ``limit`` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    data = request.stream.read(limit + 1)
    return None if len(data) > limit else data


def _event(item: object, where: str) -> tuple[str, ServerSentEvent]:
    """Check one event of the body as :meth:`SSEPush.publish` would."""
    if not isinstance(item, dict):
        raise BadField("each event must be a JSON object", where.rstrip(".") or "body")
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise BadField(
            f"unknown field {unknown[0]!r}; events have {', '.join(sorted(FIELDS))}",
            where + unknown[0],
        )
    if "data" not in item:
        raise BadField("'data' is required", where + "data")
    try:
        channel = check_channel(item.get("channel", "default"))
    except ValueError as exc:
        raise BadField(str(exc), where + "channel") from None
    fields = {name: item.get(name) for name in ("event", "id", "retry")}
    try:
        text = encode_data(item["data"], current_app.json.dumps)
    except (TypeError, ValueError) as exc:
        raise BadField(str(exc), where + "data") from None
    try:
        event = check_published_event(ServerSentEvent(text, **fields))
    except (TypeError, ValueError) as exc:
        message = str(exc)
        field = next((name for name in fields if f"'{name}'" in message), "data")
        raise BadField(message, where + field) from None
    return channel, event


def _gate(settings: Settings, authorizers: Sequence[Callable[[str], bool]]) -> Response | None:
    """The answer to a request that may not publish at all, or ``None``."""
    if settings.publish_token is None and not authorizers:
        return _error(
            404,
            "Publishing over HTTP is off. Set SSE_PUSH_PUBLISH_TOKEN or register an"
            " @sse.authorize_publish hook to turn it on.",
        )
    if settings.publish_token is not None:
        refused = _token_problem(settings.publish_token)
        if refused is not None:
            return refused
    if request.mimetype != "application/json":
        return _error(415, "Send the events as JSON, with Content-Type: application/json.")
    return None


def _events(max_bytes: int) -> list[tuple[str, ServerSentEvent]] | Response:
    """The body's events, checked, or the answer that refuses the body."""
    raw = _read_body(max_bytes)
    if raw is None:
        return _error(
            413,
            f"The body is larger than SSE_PUSH_PUBLISH_MAX_BYTES"
            f" ({max_bytes} bytes); send fewer events per request.",
        )
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return _error(400, f"The body is not JSON: {exc}", "body")
    items = body if isinstance(body, list) else [body]
    if not items:
        return _error(400, "The list of events is empty.", "body")
    try:
        return [
            _event(item, f"[{index}]." if isinstance(body, list) else "")
            for index, item in enumerate(items)
        ]
    except BadField as exc:
        return _error(400, exc.args[0], exc.args[1])


def publish_view() -> Response:
    """``POST <prefix>/publish``: see the module's documentation for the answers."""
    runtime = get_runtime(current_app)
    authorizers = runtime.hooks.publish_authorizers
    refused = _gate(runtime.settings, authorizers)
    if refused is not None:
        return refused
    events = _events(runtime.settings.publish_max_bytes)
    if isinstance(events, Response):
        return events
    for channel in dict.fromkeys(channel for channel, _ in events):
        for authorize in authorizers:
            if not authorize(channel):
                return _error(403, f"Not allowed to publish on channel {channel!r}.", "channel")
    ids: list[str] = []
    for channel, event in events:
        try:
            ids.append(runtime.broker.publish(channel, event))
        except BrokerError as exc:
            logger.warning("HTTP publish: broker unavailable: %s", exc)
            return _error(503, f"The broker could not take the event: {exc}", ids=ids)
        runtime.metrics.published()
    return jsonify(ids=ids)
