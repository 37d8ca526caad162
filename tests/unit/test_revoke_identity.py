"""``revoke`` by identity: an ``int`` user id matches Flask-Login's ``str`` ``get_id()``."""

from __future__ import annotations

import logging

import pytest
from flask import Flask, request

from flask_sse_push import SSEPush
from flask_sse_push.stream import STOP_ID
from flask_sse_push.testing import open_stream


def _app(app: Flask) -> SSEPush:
    sse = SSEPush(app)

    @sse.identify
    def who() -> str | None:
        return request.headers.get("X-User")  # a str, like current_user.get_id()

    return sse


def test_revoke_by_an_int_identity_ends_the_str_identified_stream(app: Flask) -> None:
    sse = _app(app)
    client = app.test_client()
    with open_stream(client, channels=["orders"], headers={"X-User": "7"}) as seven:
        with open_stream(client, channels=["orders"], headers={"X-User": "8"}) as eight:
            seven._pull(5)
            with app.app_context():
                assert sse.revoke("orders", identity=7) == 1
            seven.read_to_end(timeout=5)
            assert seven.parser._id == STOP_ID
            eight.assert_no_event(0.1)
            assert not eight._ended


def test_a_predicate_comparing_another_type_warns(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, ``info.identity == 7`` against ``"7"`` matched nothing, silently."""
    sse = _app(app)
    with open_stream(app.test_client(), channels=["orders"], headers={"X-User": "7"}) as stream:
        stream._pull(5)
        with app.app_context(), caplog.at_level(logging.WARNING, "flask_sse_push"):
            assert sse.revoke("orders", lambda info: info.identity == 7) == 0
            assert sse.revoke("orders", lambda info: info.identity == 7) == 0
    hints = [r for r in caplog.records if "identity=" in r.getMessage()]
    assert len(hints) == 1
    assert "is a str" in hints[0].getMessage()
