"""The signed form of the control messages between workers (see
:mod:`flask_sse_push.control`): :func:`seal` and :func:`unseal`.

A message is JSON ``{"message": ..., "signature": ...}``: the inner JSON text
(``v``, ``kind``, ``origin``, ``sent``, ``body``) and its HMAC-SHA256, keyed by
a key derived from the app's ``SECRET_KEY``. A reader checks the signature in
constant time, then the shape, then the age.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import typing as t

from .keys import derive_key

#: Seconds a control message stays valid after it was sent (either way, for
#: clocks of different hosts): an older one is a replay, and is ignored.
MAX_AGE = 60.0

_VERSION = 1


def signing_key(secret: object) -> bytes:
    """Derive the control messages' HMAC key from the app's ``SECRET_KEY``.

    Without a secret the key is empty: messages are still checked for shape and
    age, but anyone who can publish on the broker can revoke (as they can
    already send every client any event).
    """
    return derive_key(secret, b"flask-sse-push control")


def seal(key: bytes, kind: str, body: dict[str, t.Any], origin: str, now: float) -> str:
    """Return the data of a control message: the signed JSON of ``body``."""
    message = json.dumps(
        {"v": _VERSION, "kind": kind, "origin": origin, "sent": now, "body": body},
        separators=(",", ":"),
        sort_keys=True,
    )
    signature = hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"message": message, "signature": signature}, separators=(",", ":"))


class Rejected(Exception):
    """A control message that is ignored; ``args[0]`` is the counted reason."""


def unseal(key: bytes, data: str, now: float) -> tuple[str, str, dict[str, t.Any]]:
    """Check a control message and return ``(kind, origin, body)``.

    :raises Rejected: ``malformed``, ``forged`` or ``stale``.
    """
    try:
        outer = json.loads(data)
        message = outer["message"]
        signature = outer["signature"]
    except (ValueError, TypeError, KeyError):
        raise Rejected("malformed") from None
    if not isinstance(message, str) or not isinstance(signature, str):
        raise Rejected("malformed")
    expected = hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise Rejected("forged")
    try:
        inner = json.loads(message)
        kind, origin, sent, body = inner["kind"], inner["origin"], inner["sent"], inner["body"]
    except (ValueError, TypeError, KeyError):
        raise Rejected("malformed") from None
    if not (
        isinstance(kind, str)
        and isinstance(origin, str)
        and isinstance(sent, (int, float))
        and isinstance(body, dict)
    ):
        raise Rejected("malformed")
    if abs(now - sent) > MAX_AGE:
        raise Rejected("stale")
    return kind, origin, body
