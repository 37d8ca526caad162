"""Event data from application values: ``str`` as is, anything else as JSON."""

from __future__ import annotations

import json
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable


def encode_data(data: object, dumps: Callable[[t.Any], str] = json.dumps) -> str:
    """Return ``data`` as the text of an event's ``data`` field.

    A ``str`` is returned as is; anything else goes through ``dumps`` (the app's
    JSON provider in a Flask app, :func:`json.dumps` elsewhere).

    :raises TypeError: ``dumps`` cannot encode ``data`` (an object of your own
        class, a ``set``, ``bytes`` ...). The message names the ``data`` field,
        the type and how to fix it; nothing has been sent.
    :raises ValueError: ``dumps`` refused the value itself (a circular
        reference); the message names the ``data`` field.
    """
    if isinstance(data, str):
        return data
    try:
        return dumps(data)
    except TypeError as exc:
        raise TypeError(
            f"data must be a str or a JSON-serializable value, not {type(data).__name__}"
            f" ({exc}). Pass a str, or convert the value to dicts, lists, str, numbers,"
            " booleans and None first (for example dataclasses.asdict(obj)); nothing was sent."
        ) from exc
    except ValueError as exc:
        raise ValueError(
            f"data of type {type(data).__name__} cannot be encoded as JSON ({exc});"
            " nothing was sent."
        ) from exc
