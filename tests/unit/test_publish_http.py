"""``POST /events/publish`` on the Flask test client and the in-process broker."""

from __future__ import annotations

import json
import time
import typing as t

import pytest
from flask import Flask, request

from flask_sse_push import SSEPush
from tests.support.control_helpers import Opened
from tests.support.wire import parse

TOKEN = "t0ken-for-the-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def on(app: Flask) -> SSEPush:
    app.config["SSE_PUSH_PUBLISH_TOKEN"] = TOKEN
    return SSEPush(app)


def post(app: Flask, body: object, headers: dict[str, str] | None = None) -> t.Any:
    return app.test_client().post(
        "/events/publish", data=json.dumps(body), headers=headers or AUTH,
        content_type="application/json",
    )  # fmt: skip


def test_off_by_default(app: Flask) -> None:
    SSEPush(app)
    answer = post(app, {"data": "x"})
    assert answer.status_code == 404 and "SSE_PUSH_PUBLISH_TOKEN" in answer.get_json()["error"]


def test_delivers_one_event_and_a_list(app: Flask, on: SSEPush) -> None:
    stream = Opened(app, "news", None)
    one = post(app, {"channel": "news", "data": {"n": 1}, "event": "tick", "retry": 500})
    assert one.status_code == 200
    many = post(
        app, [{"channel": "news", "data": "two", "id": "my-2"}, {"channel": "news", "data": "3"}]
    )
    assert many.status_code == 200
    ids = one.get_json()["ids"] + many.get_json()["ids"]
    assert len(ids) == 3 and ids[1] == "my-2"
    deadline = time.monotonic() + 5
    while len(parse(stream.body).events) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stream.close()
    body = parse(stream.body)
    assert [(e.type, e.data, e.last_event_id) for e in body.events] == [
        ("tick", '{"n": 1}', ids[0]),
        ("message", "two", "my-2"),
        ("message", "3", ids[2]),
    ]
    assert body.retry == 500
    with app.app_context():
        assert on.stats()["events_published"] == 3


def test_the_token_is_required(app: Flask, on: SSEPush) -> None:
    missing = post(app, {"data": "x"}, headers={"X-Other": "1"})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    for header in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer", TOKEN):
        assert post(app, {"data": "x"}, headers={"Authorization": header}).status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "bad name", "data": "x"}, "channel"),
        ({"channel": "flask-sse-push:control", "data": "x"}, "channel"),
        ({"data": "x", "event": "reset"}, "event"),
        ({"data": "x", "event": "flask-sse-push:join"}, "event"),
        ({"data": "x", "event": "a\nb"}, "event"),
        ({"data": "x", "id": "flask-sse-push:stopped"}, "id"),
        ({"data": "x", "id": 5}, "id"),
        ({"data": "x", "retry": "soon"}, "retry"),
        ({"data": "x", "retry": -1}, "retry"),
        ({"data": "x", "colour": "red"}, "colour"),
        ({"event": "x"}, "data"),
        ([{"data": "ok"}, {"data": "x", "retry": True}], "[1].retry"),
        ([{"data": "ok"}, "just text"], "[1]"),
        ([], "body"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_nothing_is_sent(
    app: Flask, on: SSEPush, body: object, field: str
) -> None:
    answer = post(app, body)
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["field"] == field
    with app.app_context():
        assert on.stats()["events_published"] == 0


def test_not_json_is_400_and_not_json_typed_is_415(app: Flask, on: SSEPush) -> None:
    client = app.test_client()
    broken = client.post("/events/publish", data="{", headers=AUTH, content_type="application/json")
    assert broken.status_code == 400 and broken.get_json()["field"] == "body"
    form = client.post("/events/publish", data={"data": "x"}, headers=AUTH)
    assert form.status_code == 415


def test_a_body_over_the_limit_is_413(app: Flask) -> None:
    app.config.update(SSE_PUSH_PUBLISH_TOKEN=TOKEN, SSE_PUSH_PUBLISH_MAX_BYTES=100)
    SSEPush(app)
    assert post(app, {"data": "x" * 50}).status_code == 200
    assert post(app, {"data": "x" * 100}).status_code == 413


def test_a_hook_alone_turns_it_on_and_decides_per_channel(app: Flask) -> None:
    sse = SSEPush(app)

    @sse.authorize_publish
    def staff_only(channel: str) -> bool:
        return request.headers.get("X-Role") == "staff" and channel != "secret"

    staff = {"X-Role": "staff"}
    assert post(app, {"channel": "news", "data": "x"}, headers=staff).status_code == 200
    guest = {"X-Role": "guest"}
    assert post(app, {"channel": "news", "data": "x"}, headers=guest).status_code == 403
    mixed = [{"channel": "news", "data": "x"}, {"channel": "secret", "data": "y"}]
    assert post(app, mixed, headers=staff).status_code == 403
    with app.app_context():
        assert sse.stats()["events_published"] == 1


def test_token_and_hook_both_apply(app: Flask) -> None:
    app.config["SSE_PUSH_PUBLISH_TOKEN"] = TOKEN
    sse = SSEPush(app)
    sse.authorize_publish(lambda channel: channel == "news")
    assert post(app, {"channel": "news", "data": "x"}).status_code == 200
    assert post(app, {"channel": "other", "data": "x"}).status_code == 403
    assert post(app, {"channel": "news", "data": "x"}, headers={"X": "y"}).status_code == 401


@pytest.mark.parametrize("token", ["short", 12345])
def test_a_weak_token_is_refused_at_setup(app: Flask, token: object) -> None:
    app.config["SSE_PUSH_PUBLISH_TOKEN"] = token
    with pytest.raises(ValueError, match="SSE_PUSH_PUBLISH_TOKEN"):
        SSEPush(app)
