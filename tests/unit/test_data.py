"""Event data from application values, on every path that encodes it."""

from __future__ import annotations

import typing as t

import pytest

from flask_sse_push import Publisher
from flask_sse_push.data import encode_data
from flask_sse_push.stream import to_event

if t.TYPE_CHECKING:
    from collections.abc import Callable


class Invoice:
    """An application object no JSON encoder knows."""


def _circular() -> list[object]:
    loop: list[object] = []
    loop.append(loop)
    return loop


#: Every way data reaches the wire outside ``SSEPush.publish`` (tested in test_extension).
#: Publisher never connects before it has encoded the data, so no Redis is needed.
_PATHS: dict[str, Callable[[object], object]] = {
    "encode_data": encode_data,
    "Publisher.publish": lambda data: Publisher("redis://127.0.0.1:9/0").publish(data),
    "a streamed mapping": lambda data: to_event({"data": data, "event": "x"}),
}


def test_str_is_kept_and_other_values_become_json() -> None:
    assert encode_data("a\nb") == "a\nb"
    assert encode_data({"n": [1, None]}) == '{"n": [1, null]}'


@pytest.mark.parametrize("path", sorted(_PATHS))
def test_unencodable_data_is_a_type_error_naming_field_type_and_fix(path: str) -> None:
    with pytest.raises(TypeError) as raised:
        _PATHS[path](Invoice())
    message = str(raised.value)
    assert message.startswith("data must be a str or a JSON-serializable value, not Invoice")
    assert "Pass a str" in message


@pytest.mark.parametrize("path", sorted(_PATHS))
def test_circular_data_is_a_value_error_naming_the_field(path: str) -> None:
    with pytest.raises(ValueError, match=r"^data of type list cannot be encoded as JSON"):
        _PATHS[path](_circular())
