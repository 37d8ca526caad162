"""GRIP mode's per-app state and its Flask side: the held answer, the next link.

:func:`configure` reads the config and stores a :class:`GripMode` in
``app.extensions["sse_push.grip"]``; the stream view asks :func:`hold_answer`
first, and the proxy fetches :func:`next_link_view` to fill a gap.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
import typing as t

from flask import Response, current_app, request
from itsdangerous import BadSignature, URLSafeSerializer

from ..brokers.redis._scripts import ZERO, format_id, parse_id
from ..control import identity_text
from ..encoding import encode_comment
from ..exceptions import BrokerError
from ..keys import derive_key
from ..stream import KEEPALIVE, closing_chunk, first_chunk, jittered_lifetime, reconnect_retry
from ..validation import check_channels
from .ends import IDENTITY_LABEL, end_channels, link_timeout, revoked_channel
from .history import initial_position, position_after
from .instruct import hold_headers, parse_grip_last
from .proxy import ProxyPublisher, ProxyTarget, close_item
from .sets import LINK_REFRESH, proxy_channel, register
from .signature import SIG_HEADER, check_grip_sig

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from flask import Flask

    from ..brokers.base import Broker
    from ..brokers.redis import RedisBroker
    from ..brokers.redis._scripts import Key
    from ..event import ServerSentEvent
    from ..runtime import Runtime
    from .history import Position

logger = logging.getLogger("flask_sse_push")

#: Where :func:`configure` keeps the app's :class:`GripMode`.
GRIP_KEY = "sse_push.grip"

# The stream headers, as views.STREAM_HEADERS (which imports this module).
_CONTENT_TYPE = "text/event-stream; charset=utf-8"
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclasses.dataclass(frozen=True)
class GripMode:
    """What GRIP mode needs, read once from the config."""

    broker: RedisBroker
    publisher: ProxyPublisher
    #: Verifies ``Grip-Sig``: a shared secret (HS256) or a PEM public key (ES256).
    key: str
    #: Refuse stream requests that did not come through the proxy.
    required: bool
    #: Path of the next-link view.
    next_path: str
    #: Keys the names of identities' proxy channels (see :mod:`.ends`).
    identity_secret: bytes

    def tokens(self) -> URLSafeSerializer:
        """Signs the channel list into the next link, so the proxy can only
        fetch channels a client was authorized for."""
        secret = current_app.secret_key or self.key
        return URLSafeSerializer(secret, salt="flask-sse-push grip next link")

    def publish(self, channel: str, event: ServerSentEvent) -> str:
        """Publish to the broker and the proxies (see :func:`.publish.publish_through`)."""
        from .publish import publish_through

        return publish_through(self.broker, self.publisher, channel, event)


def proxy_urls(value: object) -> list[str]:
    """``SSE_PUSH_GRIP_URL`` as a list of URLs.

    :raises ValueError: it is neither an http(s) URL, a comma-separated string
        of them, nor a list of them.
    """
    urls: list[str] | None = None
    if isinstance(value, str):
        urls = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        urls = list(value)
    if urls:
        for url in urls:
            ProxyTarget.parse(url)  # raises for anything but an http(s) URL
        return urls
    raise ValueError(
        "SSE_PUSH_GRIP_URL must be a URL of the GRIP proxy's publish API (such as"
        f" 'http://127.0.0.1:5561' for Pushpin), or a list of them, not {value!r}."
    )


def configure(app: Flask, broker: Broker, url_prefix: str) -> GripMode | None:
    """Turn GRIP mode on for ``app`` if ``SSE_PUSH_GRIP_URL`` is set.

    :raises ValueError: the GRIP settings are incomplete or invalid, or the
        broker is not the Redis broker (the mode reads its history by entry id).
    """
    urls = app.config.get("SSE_PUSH_GRIP_URL")
    if urls is None:
        return None
    key = app.config.get("SSE_PUSH_GRIP_KEY")
    if not isinstance(key, str) or not key:
        raise ValueError(
            "SSE_PUSH_GRIP_URL is set, so SSE_PUSH_GRIP_KEY must be too: Pushpin's"
            " sig_key (from pushpin.conf), or Fastly Fanout's public key (PEM), which"
            " verifies the Grip-Sig header of every request the proxy forwards."
        )
    required = app.config.get("SSE_PUSH_GRIP_REQUIRED", False)
    if not isinstance(required, bool):
        raise ValueError(f"SSE_PUSH_GRIP_REQUIRED must be True or False, not {required!r}.")
    from ..brokers.redis import RedisBroker

    if type(broker) is not RedisBroker:
        raise ValueError(
            "GRIP mode (SSE_PUSH_GRIP_URL) needs the Redis broker: set"
            " SSE_PUSH_BROKER_URL to redis://host:port/db. The in-process and Redis"
            " Cluster brokers are not supported behind a GRIP proxy."
        )
    try:
        import jwt  # noqa: F401 - checked now rather than at the first request
    except ImportError as exc:
        raise RuntimeError("GRIP mode needs PyJWT: pip install 'flask-sse-push[grip]'") from exc
    mode = GripMode(
        broker=broker,
        publisher=ProxyPublisher(proxy_urls(urls)),
        key=key,
        required=required,
        next_path=url_prefix.rstrip("/") + "/grip/next",
        identity_secret=derive_key(app.config.get("SECRET_KEY") or key, IDENTITY_LABEL),
    )
    app.extensions[GRIP_KEY] = mode
    app.add_url_rule(mode.next_path, "sse_push_grip_next", next_link_view, methods=["GET"])
    return mode


def grip_mode(app: Flask) -> GripMode | None:
    """The app's :class:`GripMode`, or ``None`` when GRIP mode is off."""
    mode: GripMode | None = app.extensions.get(GRIP_KEY)
    return mode


class Hold(t.NamedTuple):
    """What a held stream keeps across its next links, signed into them."""

    channels: list[str]
    #: The ``str()`` of the stream's identity, or ``None`` (anonymous).
    identity: str | None
    #: When its lifetime ends (a :func:`time.time` value), or ``None``.
    deadline: float | None

    def dumps(self, mode: GripMode) -> str:
        return mode.tokens().dumps({"c": self.channels, "i": self.identity, "d": self.deadline})

    @classmethod
    def loads(cls, mode: GripMode, token: str) -> Hold:
        """:raises BadSignature, ValueError, TypeError: not a token this app signed."""
        loaded = mode.tokens().loads(token)
        if isinstance(loaded, list):
            # A link given before holds carried an identity and a deadline:
            # streams held across an upgrade keep going, as they were.
            return cls(check_channels(loaded), None, None)
        if not isinstance(loaded, dict):
            raise TypeError("not a hold token")
        identity, deadline = loaded.get("i"), loaded.get("d")
        if identity is not None and not isinstance(identity, str):
            raise TypeError("bad identity")
        if deadline is not None and not isinstance(deadline, (int, float)):
            raise TypeError("bad deadline")
        names = loaded.get("c")
        channels = check_channels(names if isinstance(names, list) else [])
        return cls(channels, identity, deadline)


def _held(runtime: Runtime, position: Position, body: bytes, hold: Hold) -> Response:
    """The held answer: ``body``, the position's events, and the instructions.

    A single-channel stream subscribes to its channel's proxy channel; a
    multi-channel one to its set's (see :mod:`.sets`), whose prev-id is the
    newest of its channels' ids. Then to the proxy channels that revoke it
    (see :mod:`.ends`): with ``N`` channels, ``N + 1`` subscriptions in all for
    an anonymous stream, ``2 N + 2`` for one with an identity.
    """
    mode = grip_mode(current_app)
    assert mode is not None
    prefix = mode.broker.prefix
    channels = hold.channels
    if len(channels) == 1:
        prev_ids = {proxy_channel(prefix, channels): position.prev_ids[channels[0]]}
        refresh = None
    else:
        keys: list[Key] = [parse_id(value) or ZERO for value in position.prev_ids.values()]
        prev_ids = {proxy_channel(prefix, channels): format_id(max(keys))}
        refresh = LINK_REFRESH
    # Revoke channels carry no prev-id: their items are not ordered events.
    revoke = end_channels(prefix, mode.identity_secret, channels, hold.identity)
    headers = hold_headers(
        prev_ids,
        keepalive=KEEPALIVE,
        interval=runtime.settings.keepalive,
        # A link of its own per answer: Pushpin shares one fetch among the
        # sessions asking for the same URL, whatever their Grip-Last, so a
        # shared link would give one stream another's missed events.
        next_url=f"{request.script_root}{mode.next_path}?token={hold.dumps(mode)}"
        f"&n={secrets.token_urlsafe(9)}",
        # Pushpin has no lifetime for a stream hold (Grip-Timeout is for
        # response holds); the next link's timeout makes it come back to us
        # at the deadline, and the answer then ends the stream.
        link_timeout=link_timeout(hold.deadline, refresh, time.time()),
    )
    body += b"".join(event.encode() for event in position.events)
    response = Response(body, status=200, content_type=_CONTENT_TYPE)
    response.headers.update(_HEADERS)
    for name, value in headers:
        response.headers.add(name, value)
    for name in revoke:
        response.headers.add("Grip-Channel", name)
    return response


def _stream_response(body: bytes) -> Response:
    response = Response(body, status=200, content_type=_CONTENT_TYPE)
    response.headers.update(_HEADERS)
    return response


def hold_answer(
    runtime: Runtime,
    channels: Sequence[str],
    last_event_id: str | None,
    identity: object = None,
) -> Response | None:
    """The answer to an authorized stream request in GRIP mode, or ``None`` to
    serve it the ordinary way (GRIP mode off, or not from the proxy and
    ``SSE_PUSH_GRIP_REQUIRED`` off).

    From the proxy (a valid ``Grip-Sig``): the first chunk and the replay, with
    the instructions to hold the stream, subscribed to the proxy channels that
    revoke ``channels`` and ``identity`` (what :meth:`SSEPush.identify
    <flask_sse_push.SSEPush.identify>` returned), and ended after 80 to 100 %
    of ``SSE_PUSH_MAX_LIFETIME``. Not from it, when required: ``403``.
    """
    mode = grip_mode(current_app)
    if mode is None:
        return None
    if not check_grip_sig(request.headers.get(SIG_HEADER), mode.key):
        if mode.required:
            return Response(
                "This stream is served through the GRIP proxy only; connect through it.\n",
                status=403,
                content_type="text/plain; charset=utf-8",
            )
        return None
    retry = runtime.settings.retry
    try:
        if len(channels) > 1:
            register(mode.broker, channels)
        position = initial_position(mode.broker, channels, last_event_id)
    except BrokerError as exc:
        logger.warning("Broker unavailable, asking the client to retry: %s", exc)
        body = encode_comment("unavailable: broker unavailable").encode()
        return _stream_response(body + closing_chunk("broker unavailable", reconnect_retry(retry)))
    lifetime = jittered_lifetime(runtime.settings.max_lifetime)
    hold = Hold(
        list(channels),
        identity_text(identity),
        None if lifetime is None else time.time() + lifetime,
    )
    return _held(runtime, position, first_chunk(retry, runtime.settings.keepalive), hold)


def revoke_held(channel: str | None, final: bytes, identity: object = None) -> bool:
    """End the streams of ``channel`` and ``identity`` (either may be ``None``,
    not both) the proxy holds: ``final`` bytes, then a close.

    For :meth:`SSEPush.revoke <flask_sse_push.SSEPush.revoke>` without a
    predicate; one with a predicate cannot be decided for streams the proxy
    holds (their :class:`~flask_sse_push.StreamInfo` stays with the proxy), so
    it leaves them alone and logs so.

    :returns: whether GRIP mode is on (and the items were sent).
    :raises ValueError: both ``channel`` and ``identity`` are ``None``.
    """
    mode = grip_mode(current_app)
    if mode is None:
        return False
    name = revoked_channel(
        mode.broker.prefix, mode.identity_secret, channel, identity_text(identity)
    )
    content = {"channel": name, "formats": {"http-stream": {"content": final.decode()}}}
    mode.publisher.send([content, close_item(name)])
    return True


def next_link_view() -> Response:
    """What the proxy fetches when a held stream missed events, or when its
    link's timeout passed: the events after each channel's ``Grip-Last`` id,
    with fresh instructions, or, past the stream's lifetime, with a
    ``retry:`` and no instructions, which ends the stream (its client resumes
    from the last id it got).

    ``403`` without a valid ``Grip-Sig`` or with a link token this app did not
    sign; ``503`` when the broker cannot be reached (the proxy retries).
    """
    from ..runtime import get_runtime

    mode = grip_mode(current_app)
    assert mode is not None
    if not check_grip_sig(request.headers.get(SIG_HEADER), mode.key):
        return Response("Grip-Sig missing or invalid.\n", status=403, mimetype="text/plain")
    try:
        hold = Hold.loads(mode, request.args.get("token", ""))
    except (BadSignature, ValueError, TypeError):
        return Response("Invalid next link.\n", status=403, mimetype="text/plain")
    channels = hold.channels
    if not channels:
        return Response("Invalid next link.\n", status=403, mimetype="text/plain")
    got = parse_grip_last(request.headers.getlist("Grip-Last"))
    # A set's one last id stands for each of its channels: ids are one order.
    last = got.get(proxy_channel(mode.broker.prefix, channels), "")
    try:
        if len(channels) > 1:
            register(mode.broker, channels)
        position = position_after(mode.broker, dict.fromkeys(channels, last))
    except BrokerError as exc:
        logger.warning("Broker unavailable for a GRIP next link: %s", exc)
        return Response("Broker unavailable.\n", status=503, mimetype="text/plain")
    runtime = get_runtime(current_app)
    if hold.deadline is not None and time.time() >= hold.deadline:
        # No Grip-Hold: the proxy sends this body and ends the stream. The
        # events carry their ids, so the client's cursor is the last of them.
        body = b"".join(event.encode() for event in position.events)
        body += closing_chunk("lifetime", reconnect_retry(runtime.settings.retry))
        return _stream_response(body)
    return _held(runtime, position, b"", hold)
