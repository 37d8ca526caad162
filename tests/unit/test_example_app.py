"""The example app through the Flask test client: the countdown's exact sequence,
its resume steps, the end answered with 204, the publish endpoint's checks and the
page's controls.
"""

from __future__ import annotations

import re

import pytest

from example_app import create_app
from example_app.countdown import resume_step
from tests.support.countdown import check_countdown
from tests.support.wire import parse


class TestCountdownInProcess:
    def test_sequence_is_exact_and_ids_are_in_the_same_block(self) -> None:
        """Each event carries its own id (the original demo sent them one late)."""
        app = create_app({"COUNTDOWN_INTERVAL": 0.0, "SSE_PUSH_KEEPALIVE": 5.0})
        body = app.test_client().get("/api/sse").get_data()
        stream = parse(body)
        check_countdown([(e.type, e.data, e.last_event_id) for e in stream.events])
        for block in body.split(b"\n\n"):
            if b"data:" in block:
                assert b"id: " in block

    @pytest.mark.parametrize(
        ("cursor", "step"),
        [(None, 0), ("1", 1), ("abcde0", 2), ("100", 3), ("abcde1", 4), ("zz9zz5", 8)],
    )
    def test_resume_step(self, cursor: str | None, step: int) -> None:
        assert resume_step(cursor) == step

    @pytest.mark.parametrize("cursor", ["abcde6", "ABCDE1", "2", "x"])
    def test_unknown_cursor_starts_over(self, cursor: str) -> None:
        assert resume_step(cursor) == 0

    def test_after_end_is_204(self) -> None:
        app = create_app({"COUNTDOWN_INTERVAL": 0.0})
        response = app.test_client().get("/api/sse", headers={"Last-Event-ID": "9999"})
        assert response.status_code == 204

    def test_publish_endpoint_validates(self) -> None:
        client = create_app().test_client()
        assert client.post("/api/publish", json={"nodata": 1}).status_code == 400
        bad = client.post("/api/publish", json={"data": "x", "event": "a\nb"})
        assert bad.status_code == 400 and "CR, LF or NUL" in bad.get_json()["error"]
        bad = client.post("/api/publish", json={"data": "x", "channel": "no spaces"})
        assert bad.status_code == 400 and "channel" in bad.get_json()["error"]

    def test_page_has_the_controls_and_a_cursor(self) -> None:
        page = create_app().test_client().get("/").get_data(as_text=True)
        for control in ('id="connect"', 'id="disconnect"', 'id="clear"', "EventSource"):
            assert control in page
        # The push section resumes from the cursor rendered into the page.
        assert re.search(r'lastEventId: "[a-z0-9]+-0"', page)
        assert 'from "/events/client.js"' in page
