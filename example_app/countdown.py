"""The demo's countdown: fixed events, each carrying its own id, resumable by id."""

from __future__ import annotations

import json
import re
import secrets
import string
import time
import typing as t
from datetime import datetime, timezone

from flask_sse_push import ServerSentEvent

if t.TYPE_CHECKING:
    from collections.abc import Iterator

#: Number of numbered messages between ``hi`` and ``end``.
MESSAGES = 5

# The random ids end in a digit telling their position (0 for ``update``,
# n for message n), so a reconnect can resume after them without server state,
# even after a restart.
_RANDOM_ID = re.compile(r"[a-z0-9]{5}([0-9])")
_ALPHABET = string.ascii_lowercase + string.digits


def _random_id(position: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(5)) + str(position)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def resume_step(last_event_id: str | None) -> int | None:
    """Return the index of the next event to send, or ``None`` after ``end``.

    Steps: 0 hello, 1 update, 2 hi, 3..7 the messages, 8 end. An id this
    countdown never sends starts it over.
    """
    if last_event_id is None:
        return 0
    if last_event_id == "9999":
        return None
    fixed = {"1": 1, "100": 3}
    if last_event_id in fixed:
        return fixed[last_event_id]
    match = _RANDOM_ID.fullmatch(last_event_id)
    if match:
        position = int(match.group(1))
        if position == 0:
            return 2
        if position <= MESSAGES:
            return 3 + position
    return 0


def _event(step: int) -> ServerSentEvent:
    if step == 0:
        data = {"id": 1, "message": "Hello, world!", "timestamp": _now()}
        return ServerSentEvent(json.dumps(data, ensure_ascii=False), id="1")
    if step == 1:
        return ServerSentEvent("bye-bye", event="update", id=_random_id(0))
    if step == 2:
        return ServerSentEvent("hi", event="hi", id="100")
    if step < 3 + MESSAGES:
        n = step - 2
        event_id = _random_id(n)
        data = {"id": event_id, "message": f"hi,这是第 {n} 条消息。", "timestamp": _now()}
        return ServerSentEvent(json.dumps(data, ensure_ascii=False), id=event_id)
    return ServerSentEvent("结束通信。", event="end", id="9999")


def countdown(start: int, interval: float) -> Iterator[ServerSentEvent]:
    """Yield the countdown from step ``start``, waiting ``interval`` seconds
    before each numbered message."""
    for step in range(start, 4 + MESSAGES):
        if 3 <= step < 3 + MESSAGES:
            time.sleep(interval)
        yield _event(step)
