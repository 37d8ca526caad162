"""The example app's countdown: its exact sequence and resume steps in process, then
read by real SSE clients from a real gunicorn, and 200 streams that go away
releasing everything.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import typing as t

import httpx
import pytest
from httpx_sse import ServerSentEvent as Received
from httpx_sse import connect_sse

from example_app import create_app
from example_app.countdown import resume_step
from tests.support.servers import Gunicorn, gunicorn
from tests.support.wire import parse

if t.TYPE_CHECKING:
    from collections.abc import Iterator

RANDOM_ID = re.compile(r"[a-z0-9]{6}")


def _check_countdown(events: list[tuple[str, str, str]]) -> None:
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


class TestCountdownInProcess:
    def test_sequence_is_exact_and_ids_are_in_the_same_block(self) -> None:
        """Each event carries its own id (the original demo sent them one late)."""
        app = create_app({"COUNTDOWN_INTERVAL": 0.0, "SSE_PUSH_KEEPALIVE": 5.0})
        body = app.test_client().get("/api/sse").get_data()
        stream = parse(body)
        _check_countdown([(e.type, e.data, e.last_event_id) for e in stream.events])
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


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(env={"COUNTDOWN_INTERVAL": "0.05"}) as running:
        yield running


def _read(url: str, headers: dict[str, str] | None = None) -> tuple[int, list[Received]]:
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


@pytest.mark.integration
class TestUnderGunicorn:
    def test_countdown_read_by_a_real_sse_client(self, server: Gunicorn) -> None:
        status, events = _read(f"{server.url}/api/sse")
        assert status == 200
        _check_countdown([(e.event, e.data, e.id) for e in events])

    def test_resume_with_last_event_id_has_no_repeats(self, server: Gunicorn) -> None:
        _, full = _read(f"{server.url}/api/sse")
        third_message = full[5]
        _, resumed = _read(f"{server.url}/api/sse", {"Last-Event-ID": third_message.id})
        assert [json.loads(e.data)["message"] for e in resumed[:2]] == [
            "hi,这是第 4 条消息。",
            "hi,这是第 5 条消息。",
        ]
        assert [e.id for e in resumed[2:]] == ["9999"]

    def test_reconnect_after_end_is_204(self, server: Gunicorn) -> None:
        status, events = _read(f"{server.url}/api/sse", {"Last-Event-ID": "9999"})
        assert (status, events) == (204, [])

    def test_publish_reaches_another_open_stream(self, server: Gunicorn) -> None:
        received: list[Received] = []
        connected = threading.Event()

        def listen() -> None:
            with (
                httpx.Client(timeout=10) as client,
                connect_sse(client, "GET", f"{server.url}/events?channel=room") as source,
            ):
                connected.set()
                for event in source.iter_sse():
                    if event.data:
                        received.append(event)
                        return

        listener = threading.Thread(target=listen)
        listener.start()
        # The view subscribes before it sends headers, so once they arrive the
        # publish cannot be missed.
        assert connected.wait(10)
        reply = httpx.post(
            f"{server.url}/api/publish",
            json={"data": {"text": "ping"}, "event": "chat", "channel": "room"},
            timeout=10,
        )
        listener.join(10)
        assert reply.status_code == 200
        assert [(e.event, json.loads(e.data), e.id) for e in received] == [
            ("chat", {"text": "ping"}, reply.json()["id"])
        ]


@pytest.mark.integration
@pytest.mark.slow
def test_200_streams_that_go_away_release_everything() -> None:
    """Clients that vanish free their subscription, queue and greenlet (found at the
    next keepalive write)."""
    with gunicorn("tests.apps.probe_app:create_app()", env={"SSE_PUSH_KEEPALIVE": "0.2"}) as server:
        probe = f"{server.url}/_probe"
        before = httpx.get(probe, timeout=10).json()
        sockets = []
        try:
            for _ in range(200):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                sock.sendall(b"GET /events?channel=x HTTP/1.1\r\nHost: t\r\n\r\n")
                sockets.append(sock)
            for sock in sockets:
                assert b"200 OK" in sock.recv(4096)
            assert httpx.get(probe, timeout=10).json()["subscribers"] == 200
        finally:
            for sock in sockets:
                sock.close()
        after: dict[str, int] = {}
        for _ in range(100):
            after = httpx.get(probe, timeout=10).json()
            if after["subscribers"] == 0 and after["greenlets"] <= before["greenlets"]:
                break
            time.sleep(0.1)
        assert after["subscribers"] == 0
        assert after["greenlets"] <= before["greenlets"]
        assert after["fds"] <= before["fds"]
