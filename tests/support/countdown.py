"""The exact event sequence of the example app's countdown, checked the same way in
process and under gunicorn."""

from __future__ import annotations

import json
import re

RANDOM_ID = re.compile(r"[a-z0-9]{6}")


def check_countdown(events: list[tuple[str, str, str]]) -> None:
    """Assert the exact sequence of the classic demo: (type, data, id) triples."""
    assert len(events) == 9
    hello, update, hi, *messages, end = events
    assert (hello[0], hello[2]) == ("message", "1")
    body = json.loads(hello[1])
    assert (body["id"], body["message"]) == (1, "Hello, world!")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*", body["timestamp"])
    assert update[:2] == ("update", "bye-bye") and RANDOM_ID.fullmatch(update[2])
    assert hi == ("hi", "hi", "100")
    for n, (kind, data, event_id) in enumerate(messages, start=1):
        body = json.loads(data)
        assert kind == "message" and RANDOM_ID.fullmatch(event_id)
        assert body["id"] == event_id
        assert body["message"] == f"hi,这是第 {n} 条消息。"
    assert end == ("end", "结束通信。", "9999")
