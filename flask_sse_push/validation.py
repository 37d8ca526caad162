"""Checks for what clients send (channel names, ``Last-Event-ID`` cursors) and for
what publishers send (event ids and types a client must be able to use)."""

from __future__ import annotations

import re
import typing as t

from .exceptions import ChannelError, LastEventIDError

if t.TYPE_CHECKING:
    from .event import ServerSentEvent

#: Allowed channel names. The set is small on purpose: names become Redis keys
#: and appear in URLs and logs.
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

#: Longest event id, in characters, that a publisher may give and that a
#: ``Last-Event-ID`` may hold. Real cursors are far shorter. 256 characters are
#: at most 1,024 UTF-8 bytes, well inside the header-line limits of servers and
#: proxies (gunicorn ``limit_request_field_size`` 8,190 bytes, nginx 8 KiB
#: ``large_client_header_buffers``), and the bound keeps a hostile header from
#: costing memory or a slow history scan.
MAX_EVENT_ID_LENGTH = 256

#: The former name of :data:`MAX_EVENT_ID_LENGTH`.
MAX_LAST_EVENT_ID_LENGTH = MAX_EVENT_ID_LENGTH

#: Event ids starting with this belong to the library (for one,
#: :data:`~flask_sse_push.stream.STOP_ID`, which ends a client for good).
RESERVED_ID_PREFIX = "flask-sse-push:"

#: What a cursor that cannot be any event id (too long, control characters)
#: is looked up as: no broker issues it and no publisher may use it, so it is
#: answered like any unknown cursor, with a ``reset`` event and the live stream.
INVALID_CURSOR = RESERVED_ID_PREFIX + "invalid"

#: Event types a publisher may not use. ``reset`` is the library's gap signal
#: (see :data:`~flask_sse_push.brokers.base.RESET_EVENT`). ``open`` and ``error``
#: would be dispatched to the ``EventSource``'s own ``onopen`` and ``onerror``
#: handlers (WHATWG HTML 9.2.6 dispatches an event named by the type), which
#: clients take for connection state changes.
RESERVED_EVENT_TYPES = frozenset({"reset", "open", "error"})

#: Event types starting with this are the library's own (the presence events
#: ``flask-sse-push:join`` and ``flask-sse-push:leave``); a publisher may not
#: use them, so a client can trust them.
RESERVED_EVENT_PREFIX = "flask-sse-push:"

#: What RFC 9110 section 5.5 forbids in a header value besides CR, LF and NUL:
#: the other C0 controls except HTAB, and DEL. Servers refuse such a request
#: (gunicorn answers ``400`` before the app runs), so an id holding one could
#: never come back as ``Last-Event-ID``.
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

#: The whitespace HTTP strips from both ends of a header value (RFC 9110 5.5,
#: the Fetch standard's "HTTP whitespace" adds CR and LF, refused anyway).
_HTTP_WHITESPACE = " \t"


#: Channel names starting with this carry the library's own messages between
#: workers (see :doc:`users`): no client may stream them and no
#: application may publish on them, so nobody outside the deployment's own
#: workers can send or read a control message through the library.
RESERVED_CHANNEL_PREFIX = "flask-sse-push:"


def check_channel_name(name: object) -> str:
    """Return ``name`` if a broker can carry it, else raise :class:`ChannelError`.

    What brokers check: the form only. Names starting with
    :data:`RESERVED_CHANNEL_PREFIX` pass here (the library's control channel
    travels on the brokers) but not through :func:`check_channel`.
    """
    if not isinstance(name, str) or CHANNEL_PATTERN.fullmatch(name) is None:
        raise ChannelError(
            f"Invalid channel name {name!r}: use 1 to 128 characters from A-Z a-z 0-9 _ . : -"
        )
    return name


def check_channel(name: object) -> str:
    """Return ``name`` if clients may stream it and applications publish on it.

    :raises ChannelError: the name has the wrong form (see
        :func:`check_channel_name`) or starts with :data:`RESERVED_CHANNEL_PREFIX`.
    """
    check_channel_name(name)
    assert isinstance(name, str)
    if name.startswith(RESERVED_CHANNEL_PREFIX):
        raise ChannelError(
            f"Invalid channel name {name!r}: names starting with"
            f" {RESERVED_CHANNEL_PREFIX!r} are reserved for the library's messages"
            " between workers. Choose another name."
        )
    return name


def check_channels(names: list[str]) -> list[str]:
    """Check each name and drop repeats, keeping the first occurrence's order."""
    return list(dict.fromkeys(check_channel(name) for name in names))


def check_last_event_id(value: str) -> str:
    """Return a ``Last-Event-ID`` value if it could be an event id, else raise.

    :raises LastEventIDError: the value is longer than
        :data:`MAX_EVENT_ID_LENGTH` or contains a character no header value
        (and so no published event id) can contain: a control character other
        than HTAB.
    """
    if len(value) > MAX_EVENT_ID_LENGTH:
        raise LastEventIDError(
            f"Last-Event-ID is {len(value)} characters long; event ids are at most"
            f" {MAX_EVENT_ID_LENGTH}. Drop the header to start from live events."
        )
    if _HEADER_CONTROL.search(value):
        raise LastEventIDError(
            "Last-Event-ID contains a control character (CR, LF, NUL or another"
            " C0 control but tab), which no event id can contain."
        )
    return value


def decode_header_cursor(raw: str) -> str:
    """Return the text a client meant by the ``Last-Event-ID`` header value ``raw``.

    WSGI hands header values over as Latin-1 text (PEP 3333). Browsers send an
    id as UTF-8, as the spec asks; the Node ``eventsource`` package and
    ``requests``-based clients send it as Latin-1. So the UTF-8 reading is
    tried first and the Latin-1 one used when the bytes are not UTF-8. The two
    readings agree for every id :func:`check_published_id` lets through.
    """
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        # Not UTF-8, or (from a server that broke PEP 3333) not Latin-1 text.
        return raw


def resume_cursor(value: str | None) -> str | None:
    """Return the cursor to resume from, given the client's value; never raise.

    ``None`` or empty: no cursor. A value that cannot be any event id (see
    :func:`check_last_event_id`) becomes :data:`INVALID_CURSOR`, which matches
    nothing, so the client gets a ``reset`` event and the live stream instead of
    an error status, which would stop its ``EventSource`` for good.
    """
    if value is None or value == "":
        return None
    try:
        return check_last_event_id(value)
    except LastEventIDError:
        return INVALID_CURSOR


def check_published_id(value: str) -> str:
    """Return ``value`` if a client can send it back as ``Last-Event-ID``, else raise.

    The empty id is allowed: it clears the client's last event id.

    :raises ValueError: the id starts with :data:`RESERVED_ID_PREFIX`; is longer
        than :data:`MAX_EVENT_ID_LENGTH`; starts or ends with a space or tab,
        which HTTP strips from header values; holds a control character, which
        servers refuse in a header; or is Latin-1 text whose bytes also read as
        different UTF-8 text, which a client sending Latin-1 would come back
        with as that other text (see :func:`decode_header_cursor`).
    """
    problem = _id_problem(value)
    if problem is not None:
        raise ValueError(
            f"Event field 'id' {_shown(value)} {problem}. Choose another id, or pass"
            " id=None to let the broker assign one."
        )
    return value


def _id_problem(value: str) -> str | None:
    if value.startswith(RESERVED_ID_PREFIX):
        return (
            f"starts with {RESERVED_ID_PREFIX!r}, which is reserved for the library's own"
            " ids (a client given such an id may be stopped for good)"
        )
    if len(value) > MAX_EVENT_ID_LENGTH:
        return (
            f"is {len(value)} characters long; clients can resume only from ids of at"
            f" most {MAX_EVENT_ID_LENGTH}"
        )
    if value != value.strip(_HTTP_WHITESPACE):
        return (
            "starts or ends with a space or tab, which HTTP strips from the"
            " Last-Event-ID header, so the client could never resume from it"
        )
    if _HEADER_CONTROL.search(value):
        return (
            "contains a control character, which no HTTP header may carry, so the"
            " client's reconnect with it would be refused"
        )
    if not value.isascii() and _misread_as_utf8(value):
        return (
            "is Latin-1 text whose bytes also read as other UTF-8 text, so clients"
            " that send Latin-1 would come back with a different id"
        )
    return None


def _misread_as_utf8(value: str) -> bool:
    try:
        return value.encode("latin-1").decode("utf-8") != value
    except UnicodeError:
        return False


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 else f"{value[:40]!r}... ({len(value)} characters)"


def check_published_event(event: ServerSentEvent) -> ServerSentEvent:
    """Return ``event`` if every client can use it as published, else raise.

    The one check behind :meth:`SSEPush.publish`, :meth:`Publisher.publish` and
    ``flask sse publish``: the fields must already be valid on the wire (the
    :class:`ServerSentEvent` constructor checks that); this adds what would
    break a client later.

    :raises ValueError: the type is one of :data:`RESERVED_EVENT_TYPES` or starts
        with :data:`RESERVED_EVENT_PREFIX`, or the
        id fails :func:`check_published_id`; the message names the field.
    """
    if event.event in RESERVED_EVENT_TYPES or (
        event.event is not None and event.event.startswith(RESERVED_EVENT_PREFIX)
    ):
        raise ValueError(
            f"Event field 'event' {event.event!r} is reserved:"
            f" {_type_reason(event.event)}. Choose another event type."
        )
    if event.id is not None:
        check_published_id(event.id)
    return event


def _type_reason(name: str) -> str:
    if name == "reset":
        return "the library sends it to tell clients they missed events"
    if name.startswith(RESERVED_EVENT_PREFIX):
        return "the library sends the types of this prefix (presence events)"
    return f"EventSource dispatches it to its own on{name} handler"
