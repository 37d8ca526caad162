"""Publish checks that need no Redis: the CLI refuses reserved ids and unreachable
brokers with its reason and a non-zero exit, and every id publish lets through
resumes from a UTF-8 or a Latin-1 ``Last-Event-ID``.
"""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask

from flask_sse_push import MemoryBroker, SSEPush
from flask_sse_push.stream import STOP_ID
from tests.support.event_ids import GOOD_IDS
from tests.support.unreachable import REASON, UnreachableBroker


def test_cli_refusal_exits_non_zero_with_the_reason(app: Flask) -> None:
    SSEPush(app, broker=MemoryBroker())
    result = app.test_cli_runner().invoke(args=["sse", "publish", "--id", STOP_ID, "x"])
    assert result.exit_code != 0
    assert "'id'" in result.output and "reserved" in result.output


@pytest.mark.parametrize("good_id", GOOD_IDS[1:])
def test_every_usable_id_resumes_from_both_header_encodings(app: Flask, good_id: str) -> None:
    """What publish lets through comes back as Last-Event-ID from a browser
    (UTF-8) and from a Latin-1 client, and resumes exactly after its event."""
    sse = SSEPush(app, broker=MemoryBroker())
    with app.app_context():
        sse.publish("1", id=good_id)
        after = sse.publish("2")
    encodings = ["utf-8"] + (["latin-1"] if all(ord(c) < 256 for c in good_id) else [])
    for encoding in encodings:
        wsgi_value = good_id.encode(encoding).decode("latin-1")
        response = app.test_client().get("/events", headers={"Last-Event-ID": wsgi_value})
        chunks = t.cast("t.Iterator[bytes]", iter(response.response))
        body = b""
        while b"data: 2" not in body and len(body) < 10_000:
            body += next(chunks)
        response.close()
        assert b"event: reset" not in body, (encoding, body)
        assert f"id: {after}\ndata: 2".encode() in body, (encoding, body)


def test_cli_with_an_unreachable_broker_exits_non_zero_with_the_reason(app: Flask) -> None:
    """A broker that cannot take the event gives an exit code and its reason, not a traceback."""
    SSEPush(app, broker=UnreachableBroker())
    result = app.test_cli_runner().invoke(args=["sse", "publish", "x"])
    assert result.exit_code == 1
    assert "Nothing was published" in result.output and REASON in result.output
    assert "Traceback" not in result.output
