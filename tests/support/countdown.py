"""The exact event sequence of the example app's countdown, checked the same way in
process and under gunicorn."""

from __future__ import annotations

import json
import re

import httpx
from httpx_sse import ServerSentEvent as Received
from httpx_sse import connect_sse

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


def read_sse(url: str, headers: dict[str, str] | None = None) -> tuple[int, list[Received]]:
    """GET ``url`` as an SSE stream: its status and its events, read to the end."""
    with (
        httpx.Client(timeout=10) as client,
        connect_sse(client, "GET", url, headers=headers or {}) as source,
    ):
        status = source.response.status_code
        if status != 200:
            return status, []
        # httpx-sse yields a retry-only block as an empty message; browsers,
        # following the spec, fire nothing for it.
        return status, [e for e in source.iter_sse() if e.data or e.retry is None]
