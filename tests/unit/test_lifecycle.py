"""Connection lifecycle in-process: endings and their retry hints, lifetime,
authorization, revocation, capacity, shutdown, CORS, and nothing pinned.

The parts that need a real server (send timeout, dead peers, signals) are in
test_lifecycle_gunicorn.py.
"""

from __future__ import annotations

import select
import socket
import threading
import time
import typing as t

import pytest
from flask import Flask, Response, abort, g, request
from werkzeug.test import TestResponse

from flask_sse_push import MemoryBroker, ServerSentEvent, SSEPush
from flask_sse_push.connections import StreamInfo
from flask_sse_push.runtime import get_runtime
from flask_sse_push.sockets import HangupWatch, tcp_options
from flask_sse_push.stream import STOP_ID, jittered_lifetime, spread_retry
from tests.support.wire import parse

if t.TYPE_CHECKING:
    from collections.abc import Iterator


def _chunks(response: TestResponse) -> Iterator[bytes]:
    return t.cast("Iterator[bytes]", iter(response.response))


def _ended(response: TestResponse, limit: int = 200) -> bytes:
    body = b""
    chunks = _chunks(response)
    for _ in range(limit):
        try:
            body += next(chunks)
        except StopIteration:
            response.close()
            return body
    raise AssertionError(f"the stream did not end: {body[-300:]!r}")


def _retry_of(body: bytes) -> int:
    retry = parse(body).retry
    assert retry is not None, body
    return retry


class TestEndings:
    def test_overflow_ends_with_a_random_retry_when_none_is_configured(self, app: Flask) -> None:
        """A slow reader is dropped with a retry of 1 to 3 s, not the browser default."""
        app.config["SSE_PUSH_QUEUE_SIZE"] = 2
        sse = SSEPush(app)
        retries = set()
        for _ in range(8):
            response = app.test_client().get("/events")
            next(_chunks(response))
            with app.app_context():
                for n in range(3):
                    sse.publish(str(n))
            body = _ended(response)
            assert b": closed: overflow\n" in body
            retries.add(_retry_of(body))
        assert all(1000 <= retry <= 3000 for retry in retries)
        assert len(retries) > 1

    def test_overflowed_client_resumes_without_loss(self, app: Flask) -> None:
        """The dropped client reconnects with its Last-Event-ID and gets everything."""
        app.config.update(SSE_PUSH_QUEUE_SIZE=2, SSE_PUSH_RETRY=500)
        sse = SSEPush(app)
        client = app.test_client()
        response = client.get("/events")
        next(_chunks(response))
        with app.app_context():
            first = sse.publish("first")
        body = b"".join(next(_chunks(response)) for _ in range(1))
        assert parse(body).events[0].data == "first"
        with app.app_context():
            ids = [sse.publish(f"burst {n}") for n in range(6)]
        rest = _ended(response)
        assert rest.endswith(b": closed: overflow\n\nretry: 500\n\n")
        last = parse(body + rest).last_event_id
        assert last == first
        again = client.get("/events", headers={"Last-Event-ID": last})
        chunks = _chunks(again)
        replay = b""
        while len(parse(replay).events) < 6:
            replay += next(chunks)
        again.close()
        assert [e.last_event_id for e in parse(replay).events] == ids

    def test_spread_retry_covers_one_to_three_times_the_base(self) -> None:
        samples = {spread_retry(1000) for _ in range(200)}
        assert min(samples) >= 1000 and max(samples) <= 3000 and len(samples) > 50
        assert {spread_retry(None) for _ in range(50)} <= set(range(1000, 3001))


class TestLifetime:
    def test_stream_ends_after_its_lifetime_between_events(self, app: Flask) -> None:
        app.config.update(SSE_PUSH_MAX_LIFETIME=0.3, SSE_PUSH_KEEPALIVE=0.05)
        sse = SSEPush(app)
        response = app.test_client().get("/events")
        chunks = _chunks(response)
        next(chunks)
        with app.app_context():
            sent = sse.publish("inside")
        body = b""
        for _ in range(200):
            try:
                body += next(chunks)
            except StopIteration:
                break
        response.close()
        stream = parse(body)
        assert [e.data for e in stream.events] == ["inside"]
        assert stream.last_event_id == sent
        assert b"\n\n: closed: lifetime\n" in body or body.startswith(b": closed: lifetime\n")
        assert 1000 <= _retry_of(body) <= 3000
        assert body.endswith(b"\n\n")

    def test_lifetime_is_jittered_to_80_to_100_percent(self) -> None:
        samples = [jittered_lifetime(600.0) for _ in range(500)]
        values = [s for s in samples if s is not None]
        assert len(values) == 500
        assert 480.0 <= min(values) < 500.0 and 580.0 < max(values) <= 600.0
        assert jittered_lifetime(None) is None

    def test_no_lifetime_when_disabled(self, app: Flask) -> None:
        app.config.update(SSE_PUSH_MAX_LIFETIME=None, SSE_PUSH_KEEPALIVE=0.02)
        SSEPush(app)
        response = app.test_client().get("/events")
        chunks = _chunks(response)
        received = [next(chunks) for _ in range(30)]
        response.close()
        assert received[1:] == [b": keepalive\n\n"] * 29


def _private_app(app: Flask) -> tuple[SSEPush, list[str]]:
    sse = SSEPush(app)
    seen: list[str] = []

    @sse.authorize
    def only_members(channel: str) -> bool:
        seen.append(channel)
        return not channel.startswith("private-") or request.headers.get("X-User") == "admin"

    @sse.identify
    def user() -> str | None:
        return request.headers.get("X-User")

    return sse, seen


class TestAuthorization:
    def test_refused_channel_is_403_with_a_reason(self, app: Flask) -> None:
        _, seen = _private_app(app)
        response = app.test_client().get("/events?channel=news&channel=private-x")
        assert response.status_code == 403
        assert response.mimetype == "text/plain"
        assert "private-x" in response.get_data(as_text=True)
        assert seen == ["news", "private-x"]

    def test_allowed_request_streams_and_carries_its_identity(self, app: Flask) -> None:
        sse, seen = _private_app(app)
        response = app.test_client().get(
            "/events?channel=news&channel=private-x", headers={"X-User": "admin"}
        )
        assert response.status_code == 200
        next(_chunks(response))
        with app.app_context():
            (info,) = sse.streams()
        assert info.channels == ("news", "private-x")
        assert info.identity == "admin"
        assert info.remote_addr == "127.0.0.1"
        assert seen == ["news", "private-x"]
        response.close()
        with app.app_context():
            assert sse.streams() == []

    def test_hook_may_abort_with_401(self, app: Flask) -> None:
        sse = SSEPush(app)

        @sse.authorize
        def logged_in(channel: str) -> bool:
            abort(401)

        assert app.test_client().get("/events").status_code == 401
        with app.app_context():
            assert sse.broker.subscriber_count() == 0 and sse.streams() == []

    def test_hooks_run_on_every_reconnect(self, app: Flask) -> None:
        sse, seen = _private_app(app)
        with app.app_context():
            cursor = sse.publish("x")
        client = app.test_client()
        for _ in range(3):
            client.get("/events", headers={"Last-Event-ID": cursor}).close()
        assert seen == ["default"] * 3


class TestRevoke:
    def _open(self, app: Flask, user: str, channel: str = "room") -> TestResponse:
        response = app.test_client().get(f"/events?channel={channel}", headers={"X-User": user})
        next(_chunks(response))
        return response

    def test_revoke_ends_matching_streams_for_good(self, app: Flask) -> None:
        sse, _ = _private_app(app)
        alice, bob = self._open(app, "alice"), self._open(app, "bob")
        with app.app_context():
            assert sse.revoke("room", lambda info: info.identity == "alice") == 1
            sse.publish("after", channel="room")
        body = _ended(alice)
        assert body.startswith(b": closed: revoked\n")
        assert parse(body).last_event_id == STOP_ID and parse(body).events == []
        bob_body = b""
        chunks = _chunks(bob)
        while not parse(bob_body).events:
            bob_body += next(chunks)
        bob.close()
        assert parse(bob_body).events[0].data == "after"
        reconnect = app.test_client().get(
            "/events?channel=room", headers={"X-User": "alice", "Last-Event-ID": STOP_ID}
        )
        assert reconnect.status_code == 204
        assert reconnect.get_data() == b""

    def test_revoke_without_predicate_ends_the_channel_only(self, app: Flask) -> None:
        sse, _ = _private_app(app)
        room, other = self._open(app, "a"), self._open(app, "a", channel="other")
        with app.app_context():
            assert sse.revoke("room") == 1
            assert sse.revoke("room") == 0
        _ended(room)
        with app.app_context():
            assert [info.channels for info in sse.streams()] == [("other",)]
        other.close()

    def test_revoke_with_reconnect_keeps_the_cursor(self, app: Flask) -> None:
        """The client comes back, passes authorize again, and resumes."""
        app.config["SSE_PUSH_RETRY"] = 300
        sse, seen = _private_app(app)
        response = self._open(app, "carol")
        with app.app_context():
            first = sse.publish("one", channel="room")
        body = b""
        chunks = _chunks(response)
        while not parse(body).events:
            body += next(chunks)
        with app.app_context():
            assert sse.revoke("room", reconnect=True) == 1
            missed = sse.publish("two", channel="room")
        body += _ended(response)
        assert body.endswith(b": closed: revoked\n\nretry: 300\n\n")
        assert parse(body).last_event_id == first
        again = app.test_client().get(
            "/events?channel=room", headers={"X-User": "carol", "Last-Event-ID": first}
        )
        replay = b""
        chunks = _chunks(again)
        while not parse(replay).events:
            replay += next(chunks)
        again.close()
        assert [(e.data, e.last_event_id) for e in parse(replay).events] == [("two", missed)]
        assert seen == ["room", "room"]

    def test_revoke_checks_the_channel_name(self, app: Flask, sse: SSEPush) -> None:
        with pytest.raises(ValueError, match="Invalid channel"):
            sse.revoke("no spaces")


class TestCapacity:
    def test_streams_beyond_the_limit_get_the_transient_answer(self, app: Flask) -> None:
        app.config["SSE_PUSH_MAX_CONNECTIONS"] = 2
        app.config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"] = 3  # one test client holds them all
        sse = SSEPush(app)
        client = app.test_client()
        open_ = [client.get("/events") for _ in range(2)]
        refused = client.get("/events")
        assert refused.status_code == 200
        assert refused.mimetype == "text/event-stream"
        body = _ended(refused)
        assert b": unavailable: at capacity\n" in body and 1000 <= _retry_of(body) <= 3000
        with app.app_context():
            assert sse.broker.subscriber_count() == 2
        open_[0].close()
        accepted = client.get("/events")
        assert next(_chunks(accepted)).startswith(b": connected\n")
        accepted.close()
        open_[1].close()

    def test_app_streams_count_too(self, app: Flask) -> None:
        app.config["SSE_PUSH_MAX_CONNECTIONS"] = 1
        sse = SSEPush(app)

        @app.get("/ticks")
        def ticks() -> Response:
            return sse.stream(iter(["a", "b"]))

        client = app.test_client()
        first = client.get("/events")
        assert b"at capacity" in _ended(client.get("/ticks"))
        first.close()
        assert [e.data for e in parse(_ended(client.get("/ticks"))).events] == ["a", "b"]

    @pytest.mark.parametrize("value", [0, -1, 1.5, "10", True])
    def test_bad_limit_is_refused(self, app: Flask, value: object) -> None:
        app.config["SSE_PUSH_MAX_CONNECTIONS"] = value
        with pytest.raises(ValueError, match="SSE_PUSH_MAX_CONNECTIONS"):
            SSEPush(app)


class TestShutdown:
    def test_shutdown_ends_every_stream_with_a_spread_retry(self, app: Flask) -> None:
        app.config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"] = 100  # one test client holds them all
        sse = SSEPush(app)

        @app.get("/app-stream")
        def own() -> Response:
            def forever() -> Iterator[str]:
                while True:
                    time.sleep(0.01)
                    yield "tick"

            return sse.stream(forever())

        client = app.test_client()
        responses = [client.get("/events?channel=a") for _ in range(20)]
        responses.append(client.get("/app-stream"))
        for response in responses:
            next(_chunks(response))
        assert get_runtime(app).registry.shut_down() == 21
        retries = set()
        for response in responses:
            body = _ended(response)
            assert b": closed: server shutting down\n" in body
            retries.add(_retry_of(body))
        assert all(1000 <= retry <= 3000 for retry in retries) and len(retries) > 1
        late = client.get("/events")
        assert b": unavailable: server shutting down\n" in _ended(late)
        with app.app_context():
            assert sse.broker.subscriber_count() == 0 and sse.streams() == []

    def test_shutdown_wakes_a_stream_that_waits_for_events(self, app: Flask) -> None:
        """The stream does not wait for its next keepalive to end."""
        app.config["SSE_PUSH_KEEPALIVE"] = 30.0
        SSEPush(app)
        response = app.test_client().get("/events")
        chunks = _chunks(response)
        next(chunks)
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(next(chunks)))
        reader.start()
        time.sleep(0.1)
        get_runtime(app).registry.shut_down()
        reader.join(5)
        assert not reader.is_alive()
        assert result[0].startswith(b": closed: server shutting down\n")
        response.close()


class TestNothingPinned:
    def test_teardown_runs_before_the_stream_ends(self, app: Flask) -> None:
        """Request teardown (where a DB session is removed) happens as soon as the
        view returns, while the stream goes on."""
        sse = SSEPush(app)
        log: list[str] = []

        @app.teardown_request
        def release_session(exc: BaseException | None) -> None:
            log.append("teardown")

        @app.teardown_appcontext
        def release_app_context(exc: BaseException | None) -> None:
            log.append("appcontext")

        @sse.authorize
        def uses_the_session(channel: str) -> bool:
            g.session = "open"
            return True

        response = app.test_client().get("/events")
        chunks = _chunks(response)
        next(chunks)
        assert log == ["teardown", "appcontext"]
        get_runtime(app).broker.publish("default", ServerSentEvent("still streaming"))
        body = b""
        while not parse(body).events:
            body += next(chunks)
        assert log == ["teardown", "appcontext"]
        response.close()


class TestCORS:
    ORIGIN = "http://app.example.com:5001"

    def _app(self, app: Flask) -> Flask:
        app.config["SSE_PUSH_CORS_ORIGINS"] = [self.ORIGIN]
        SSEPush(app)

        @app.get("/elsewhere")
        def elsewhere() -> str:
            return "not the stream"

        return app

    def test_listed_origin_gets_credentials(self, app: Flask) -> None:
        response = self._app(app).test_client().get("/events", headers={"Origin": self.ORIGIN})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == self.ORIGIN
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        response.close()

    def test_preflight_lets_last_event_id_through(self, app: Flask) -> None:
        response = (
            self._app(app)
            .test_client()
            .options(
                "/events",
                headers={
                    "Origin": self.ORIGIN,
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "last-event-id",
                },
            )
        )
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == self.ORIGIN
        assert "last-event-id" in response.headers["Access-Control-Allow-Headers"].lower()
        assert response.headers["Access-Control-Allow-Credentials"] == "true"

    def test_other_origin_is_refused_before_streaming(self, app: Flask) -> None:
        client = self._app(app).test_client()
        for origin in ("http://evil.example", "http://app.example.com:50012", "null"):
            response = client.get("/events", headers={"Origin": origin})
            assert response.status_code == 403
            assert "Access-Control-Allow-Origin" not in response.headers
            assert "SSE_PUSH_CORS_ORIGINS" in response.get_data(as_text=True)
        with app.app_context():
            assert get_runtime(app).broker.subscriber_count() == 0

    def test_same_host_and_no_origin_pass(self, app: Flask) -> None:
        client = self._app(app).test_client()
        for headers in ({}, {"Origin": "http://localhost"}, {"Origin": "https://localhost"}):
            response = client.get("/events", headers=headers)
            assert response.status_code == 200
            response.close()

    def test_only_the_blueprint_gets_cors_headers(self, app: Flask) -> None:
        response = self._app(app).test_client().get("/elsewhere", headers={"Origin": self.ORIGIN})
        assert "Access-Control-Allow-Origin" not in response.headers

    def test_off_by_default(self, app: Flask, sse: SSEPush) -> None:
        response = app.test_client().get("/events", headers={"Origin": self.ORIGIN})
        assert response.status_code == 200
        assert "Access-Control-Allow-Origin" not in response.headers
        response.close()

    @pytest.mark.parametrize(
        "value", ["*", ["https://a.example/path"], ["a.example"], [1], {"a": 1}, ["https://*.x"]]
    )
    def test_bad_origins_are_refused(self, app: Flask, value: object) -> None:
        app.config["SSE_PUSH_CORS_ORIGINS"] = value
        with pytest.raises(ValueError, match="SSE_PUSH_CORS_ORIGINS"):
            SSEPush(app)


class TestConfig:
    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("SSE_PUSH_SEND_TIMEOUT", 0),
            ("SSE_PUSH_SEND_TIMEOUT", None),
            ("SSE_PUSH_MAX_LIFETIME", -5),
            ("SSE_PUSH_MAX_LIFETIME", "600"),
        ],
    )
    def test_bad_seconds_are_refused(self, app: Flask, key: str, value: object) -> None:
        app.config[key] = value
        with pytest.raises(ValueError, match=key):
            SSEPush(app)

    def test_defaults(self, app: Flask, sse: SSEPush) -> None:
        state = get_runtime(app)
        assert state.settings.send_timeout == 30.0
        assert state.settings.max_lifetime == 600.0
        assert state.registry.max_connections is None
        assert app.config["SSE_PUSH_CORS_ORIGINS"] is None

    @pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
    def test_tcp_options_follow_the_timeouts(self) -> None:
        options = {name: value for _, name, value in tcp_options(15.0, 30.0)}
        assert options[socket.SO_KEEPALIVE] == 1
        assert options[socket.TCP_KEEPIDLE] == 15
        assert options[socket.TCP_KEEPINTVL] == 10
        assert options[socket.TCP_KEEPCNT] == 3
        assert options[socket.TCP_USER_TIMEOUT] == 45000


def test_stream_info_is_plain_data() -> None:
    info = StreamInfo(channels=("a",), identity=7)
    assert info.remote_addr is None and info.last_event_id is None
    assert info.started_at <= time.time()


def test_memory_broker_close_wakes_a_waiting_get() -> None:
    """revoke() and shutdown rely on it: close() from elsewhere ends a blocked get()."""
    subscription = MemoryBroker().subscribe(["a"])
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            subscription.get(30)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    subscription.close()
    waiter.join(5)
    assert not waiter.is_alive() and len(errors) == 1


class TestHangupWatch:
    """The kernel's watch for a peer's FIN, keyed by descriptor."""

    @pytest.fixture
    def watch(self) -> t.Iterator[HangupWatch[str]]:
        epoll = getattr(select, "epoll", None)
        if epoll is None:
            pytest.skip("epoll is Linux only")
        watch: HangupWatch[str] = HangupWatch(epoll)
        yield watch
        watch.close()

    def test_reports_the_key_of_a_socket_whose_peer_closed(self, watch: HangupWatch[str]) -> None:
        open_pair, closing_pair = socket.socketpair(), socket.socketpair()
        try:
            assert watch.add("open", open_pair[0])
            assert watch.add("closing", closing_pair[0])
            assert watch.hung_up() == []
            closing_pair[1].close()
            assert watch.hung_up() == ["closing"]
        finally:
            for sock in (*open_pair, *closing_pair):
                sock.close()

    def test_a_removed_key_is_never_reported(self, watch: HangupWatch[str]) -> None:
        ours, peer = socket.socketpair()
        try:
            assert watch.add("gone", ours)
            watch.remove("gone", ours)
            peer.close()
            assert watch.hung_up() == []
        finally:
            ours.close()
            peer.close()

    def test_a_reused_descriptor_reports_its_new_key_only(self, watch: HangupWatch[str]) -> None:
        first, first_peer = socket.socketpair()
        fd = first.fileno()
        assert watch.add("first", first)
        first.close()  # the kernel drops the registration; the number is free again
        first_peer.close()
        second, second_peer = socket.socketpair()
        try:
            if second.fileno() != fd and second_peer.fileno() != fd:
                pytest.skip("the kernel did not reuse the descriptor number")
            reused = second if second.fileno() == fd else second_peer
            other = second_peer if reused is second else second
            assert watch.add("second", reused)
            watch.remove("first", first)  # closed: found by its key, the new one stays
            other.close()
            assert watch.hung_up() == ["second"]
        finally:
            second.close()
            second_peer.close()

    def test_a_closed_socket_is_not_watched(self, watch: HangupWatch[str]) -> None:
        ours, peer = socket.socketpair()
        ours.close()
        peer.close()
        assert not watch.add("closed", ours)
        watch.remove("closed", ours)
        assert watch.hung_up() == []
