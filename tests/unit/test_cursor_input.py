""":func:`flask_sse_push.last_event_id` reads the resume cursor for app generators
with the stream view's rule and never raises: non-UTF-8 headers as Latin-1, and
values that cannot be ids as the invalid-cursor marker.
"""

from __future__ import annotations

import pytest
from flask import Flask

from flask_sse_push import MemoryBroker, SSEPush, last_event_id
from flask_sse_push.validation import INVALID_CURSOR


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"Last-Event-ID": "ünïçødé".encode().decode("latin-1")}, "", "ünïçødé"),
        ({"Last-Event-ID": "ünïçødé"}, "", "ünïçødé"),
        ({"Last-Event-ID": b"\xc3\x28".decode("latin-1")}, "", "\xc3("),
        ({"Last-Event-ID": "x" * 300}, "", INVALID_CURSOR),
        ({}, "last_event_id=a%00b", INVALID_CURSOR),
        ({}, "last_event_id=a%01b", INVALID_CURSOR),
        ({}, "last_event_id=ok", "ok"),
        ({}, "", None),
        ({"Last-Event-ID": ""}, "last_event_id=q", None),
    ],
)
def test_last_event_id_never_raises(
    app: Flask, headers: dict[str, str], query: str, expected: str | None
) -> None:
    """App generators read the cursor with the same rule as the stream view."""
    SSEPush(app, broker=MemoryBroker())

    @app.get("/gen")
    def gen() -> dict[str, str | None]:
        return {"cursor": last_event_id()}

    reply = app.test_client().get("/gen", headers=headers, query_string=query)
    assert reply.status_code == 200
    assert reply.get_json() == {"cursor": expected}
