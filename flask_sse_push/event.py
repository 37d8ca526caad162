"""The message type: one validated Server-Sent Event."""

from __future__ import annotations

import dataclasses
import typing as t

from .encoding import encode_event

_FORBIDDEN = ("\r", "\n", "\0")


def _check_line_field(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(
            f"ServerSentEvent field {name!r} must be a str or None, not"
            f" {type(value).__name__}; convert it first, for example {name}=str(value)."
        )
    for char in _FORBIDDEN:
        if char in value:
            raise ValueError(
                f"ServerSentEvent field {name!r} must not contain CR, LF or NUL"
                f" (got {value!r}); these characters would end or corrupt the field"
                " on the wire."
            )


#: The ``event:`` type sent where a stream has a gap (the client's cursor cannot be
#: resumed): the client must reload its state.
RESET_EVENT = "reset"


@dataclasses.dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One event as the client's ``EventSource`` will see it.

    The fields are checked when the event is made, so an event that exists can
    always be encoded, and its bytes parse back to exactly these fields.

    :param data: the payload. Line breaks (CR, LF, CRLF) become several
        ``data:`` lines and come back as LF in the browser.
    :param event: the event type; ``None`` means ``message``.
    :param id: the event id the client will send back as ``Last-Event-ID``.
        An empty string clears the client's last event id.
    :param retry: the client's reconnection delay, in milliseconds.
    :raises TypeError: a field has the wrong type.
    :raises ValueError: ``event`` or ``id`` contains CR, LF or NUL, or ``retry``
        is negative.

    .. code-block:: python

        ServerSentEvent("hello", event="greeting", id="7").encode()
        # b"event: greeting\\nid: 7\\ndata: hello\\n\\n"

    .. versionadded:: 0.1
    """

    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    _wire: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.data, str):
            raise TypeError(
                f"ServerSentEvent field 'data' must be a str, not"
                f" {type(self.data).__name__}; serialize it first (SSEPush.publish()"
                " JSON-encodes non-str data for you)."
            )
        _check_line_field("event", self.event)
        _check_line_field("id", self.id)
        retry = self.retry
        if retry is not None:
            if isinstance(retry, bool) or not isinstance(retry, int):
                raise TypeError(
                    "ServerSentEvent field 'retry' must be an int number of"
                    f" milliseconds or None, not {type(retry).__name__}."
                )
            if retry < 0:
                raise ValueError(
                    "ServerSentEvent field 'retry' must be >= 0 milliseconds"
                    f" (got {retry}); clients ignore any other value."
                )
        try:
            wire = encode_event(self.data, self.event, self.id, self.retry).encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"ServerSentEvent field {self._unencodable()!r} is not valid Unicode"
                " text (it has a lone surrogate), so it cannot be sent as UTF-8."
            ) from None
        object.__setattr__(self, "_wire", wire)

    def _unencodable(self) -> str:
        for name in ("data", "event", "id"):
            value = getattr(self, name)
            try:
                if value is not None:
                    value.encode()
            except UnicodeEncodeError:
                return name
        return "data"

    def encode(self) -> bytes:
        """Return the exact UTF-8 bytes of this event, ending with ``\\n\\n``.

        The bytes are computed once, when the event is made, so an event fanned
        out to many clients is encoded only once.

        .. versionadded:: 0.1
        """
        assert self._wire is not None
        return self._wire

    def replace(self, **changes: t.Any) -> ServerSentEvent:
        """Return a copy with some fields changed (and validated again)."""
        return dataclasses.replace(self, **changes)
