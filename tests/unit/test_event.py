""":class:`flask_sse_push.ServerSentEvent` refuses fields that would break the
event-stream format when it is made, and compares and copies as a frozen value.
"""

from __future__ import annotations

import typing as t

import pytest

from flask_sse_push import ServerSentEvent


class TestValidation:
    @pytest.mark.parametrize("field", ["event", "id"])
    @pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "\r\n"])
    def test_line_breaks_and_nul_are_refused_in_event_and_id(self, field: str, bad: str) -> None:
        """A CR, LF or NUL would end the field early or be dropped by the client."""
        with pytest.raises(ValueError, match=field):
            ServerSentEvent("x", **{field: bad})  # type: ignore[arg-type]

    @pytest.mark.parametrize("field", ["event", "id"])
    def test_non_str_event_and_id_are_refused(self, field: str) -> None:
        """An int id is a common slip; the error says how to fix it."""
        with pytest.raises(TypeError, match=rf"{field}.*str\(value\)"):
            ServerSentEvent("x", **{field: 5})  # type: ignore[arg-type]

    @pytest.mark.parametrize("retry", [True, 1.5, "10"])
    def test_retry_must_be_an_int(self, retry: object) -> None:
        """Booleans, floats and strings are not milliseconds."""
        with pytest.raises(TypeError, match="retry"):
            ServerSentEvent("x", retry=t.cast(int, retry))

    def test_negative_retry_is_refused(self) -> None:
        """The wire format has no sign for retry."""
        with pytest.raises(ValueError, match="retry"):
            ServerSentEvent("x", retry=-1)

    def test_data_must_be_str(self) -> None:
        """Serialization is the caller's job (publish() does it)."""
        with pytest.raises(TypeError, match="data"):
            ServerSentEvent(t.cast(str, {"a": 1}))

    def test_lone_surrogate_is_refused_when_the_event_is_made(self) -> None:
        """An event that exists can always be encoded as UTF-8."""
        with pytest.raises(ValueError, match="'id'"):
            ServerSentEvent("ok", id="\ud800")

    def test_valid_fields_are_kept(self) -> None:
        """Empty id, empty event, NUL in data and retry 0 are all legal."""
        event = ServerSentEvent("a\0b", event="", id="", retry=0)
        assert (event.data, event.event, event.id, event.retry) == ("a\0b", "", "", 0)


class TestValueSemantics:
    def test_events_compare_by_fields(self) -> None:
        """The cached wire bytes take no part in equality or repr."""
        assert ServerSentEvent("a", id="1") == ServerSentEvent("a", id="1")
        assert "wire" not in repr(ServerSentEvent("a"))

    def test_replace_validates_again(self) -> None:
        """A copy cannot smuggle in a bad field."""
        event = ServerSentEvent("a")
        assert event.replace(id="2").encode() == b"id: 2\ndata: a\n\n"
        with pytest.raises(ValueError, match="id"):
            event.replace(id="\n")

    def test_event_is_frozen(self) -> None:
        """Events are shared between clients, so they cannot change."""
        event = ServerSentEvent("a")
        with pytest.raises(AttributeError):
            event.data = "b"  # type: ignore[misc]
