"""The example app under a real gunicorn: its countdown read by real SSE clients,
resumed without repeats, and 200 streams that go away releasing everything.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import typing as t

import httpx
import pytest
from httpx_sse import ServerSentEvent as Received
from httpx_sse import connect_sse

from tests.support.countdown import check_countdown, read_sse
from tests.support.servers import Gunicorn, gunicorn

if t.TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(env={"COUNTDOWN_INTERVAL": "0.05"}) as running:
        yield running


@pytest.mark.integration
class TestUnderGunicorn:
    def test_countdown_read_by_a_real_sse_client(self, server: Gunicorn) -> None:
        status, events = read_sse(f"{server.url}/api/sse")
        assert status == 200
        check_countdown([(e.event, e.data, e.id) for e in events])

    def test_resume_with_last_event_id_has_no_repeats(self, server: Gunicorn) -> None:
        _, full = read_sse(f"{server.url}/api/sse")
        third_message = full[5]
        _, resumed = read_sse(f"{server.url}/api/sse", {"Last-Event-ID": third_message.id})
        assert [json.loads(e.data)["message"] for e in resumed[:2]] == [
            "hi,这是第 4 条消息。",
            "hi,这是第 5 条消息。",
        ]
        assert [e.id for e in resumed[2:]] == ["9999"]

    def test_reconnect_after_end_is_204(self, server: Gunicorn) -> None:
        status, events = read_sse(f"{server.url}/api/sse", {"Last-Event-ID": "9999"})
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
