"""GRIP mode without a proxy: the signature check, the headers, the publish
items, the positions read from Redis (fakeredis), and the Flask side."""

from __future__ import annotations

import http.server
import json
import threading
import time
import typing as t

import fakeredis
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, request

from flask_sse_push import ServerSentEvent, SSEPush
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.grip.ends import (
    IDENTITY_LABEL,
    channel_identity_channel,
    identity_channel,
    link_timeout,
)
from flask_sse_push.grip.history import initial_position, position_after
from flask_sse_push.grip.instruct import cstring, hold_headers, parse_grip_last
from flask_sse_push.grip.proxy import ProxyPublisher, ProxyTarget, close_item, publish_item
from flask_sse_push.grip.sets import register, set_items
from flask_sse_push.grip.signature import check_grip_sig
from flask_sse_push.keys import derive_key
from flask_sse_push.stream import closing_chunk, stop_chunk

if t.TYPE_CHECKING:
    from collections.abc import Iterator

KEY = "a-shared-secret-of-at-least-32-bytes!"


def grip_sig(key: str = KEY, *, exp: float | None = 3600, iss: str = "pushpin") -> str:
    claims: dict[str, t.Any] = {"iss": iss}
    if exp is not None:
        claims["exp"] = int(time.time() + exp)
    return jwt.encode(claims, key, algorithm="HS256")


# -- signature ---------------------------------------------------------------


def test_sig_from_pushpin_is_valid() -> None:
    assert check_grip_sig(grip_sig(), KEY)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "not-a-jwt",
        grip_sig("another-secret-of-at-least-32-bytes!!"),
        grip_sig(exp=-60),  # expired, beyond the leeway
        grip_sig(exp=None),  # no exp: a token that never expires is refused
    ],
)
def test_sig_refused(token: str | None) -> None:
    assert not check_grip_sig(token, KEY)


def test_sig_es256_with_public_key() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    token = jwt.encode({"iss": "fastly", "exp": int(time.time()) + 60}, private, algorithm="ES256")
    assert check_grip_sig(token, public)
    # An HS256 token "signed" with the public key (which anyone has) is refused.
    forged = jwt.encode({"exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256")
    assert not check_grip_sig(forged, public)


# -- instructions ------------------------------------------------------------


def test_hold_headers() -> None:
    headers = hold_headers(
        {"sse:a": "5-0", "sse:b": "0-0"},
        keepalive=b": keepalive\n\n",
        interval=15.0,
        next_url="/events/grip/next?token=t",
    )
    assert headers == [
        ("Grip-Hold", "stream"),
        ("Grip-Channel", "sse:a; prev-id=5-0"),
        ("Grip-Channel", "sse:b; prev-id=0-0"),
        ("Grip-Keep-Alive", ": keepalive\\n\\n; format=cstring; timeout=15"),
        ("Grip-Link", "</events/grip/next?token=t>; rel=next"),
    ]


def test_cstring_escapes() -> None:
    assert cstring(b"a\\b\r\n\tc") == "a\\\\b\\r\\n\\tc"


def test_parse_grip_last() -> None:
    assert parse_grip_last(["sse:a; last-id=5-0", "sse:b; last-id=7-1, sse:c; last-id=0-0"]) == {
        "sse:a": "5-0",
        "sse:b": "7-1",
        "sse:c": "0-0",
    }
    assert parse_grip_last(["sse:a", "sse:b; other=1"]) == {}


# -- publish items -----------------------------------------------------------


def test_publish_item_carries_wire_bytes_and_ids() -> None:
    event = ServerSentEvent("line 1\nline 2", event="note", id="9-0")
    item = publish_item("sse:a", event, "9-0", "8-3")
    assert item == {
        "channel": "sse:a",
        "id": "9-0",
        "prev-id": "8-3",
        "formats": {
            "http-stream": {"content": "event: note\nid: 9-0\ndata: line 1\ndata: line 2\n\n"}
        },
    }
    assert item["formats"]["http-stream"]["content"].encode() == event.encode()
    assert close_item("sse:a") == {
        "channel": "sse:a",
        "formats": {"http-stream": {"action": "close"}},
    }


@pytest.mark.parametrize(
    ("url", "endpoint", "authorization"),
    [
        ("http://127.0.0.1:5561", "http://127.0.0.1:5561/publish/", None),
        ("http://127.0.0.1:5561/publish/", "http://127.0.0.1:5561/publish/", None),
        (
            "https://api.fastly.com/service/abc?key=tok",
            "https://api.fastly.com/service/abc/publish/",
            "Bearer tok",
        ),
        ("http://u:p@proxy:80", "http://proxy:80/publish/", "Basic dTpw"),
    ],
)
def test_proxy_target(url: str, endpoint: str, authorization: str | None) -> None:
    assert ProxyTarget.parse(url) == ProxyTarget(endpoint, authorization)


def test_proxy_target_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="http"):
        ProxyTarget.parse("redis://127.0.0.1:6379")


class _Capture(http.server.BaseHTTPRequestHandler):
    bodies: t.ClassVar[list[dict[str, t.Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append({"path": self.path, **json.loads(self.rfile.read(length))})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[dict[str, t.Any]]]]:
    """A thread in this process that takes publish POSTs, like a proxy would."""
    bodies: list[dict[str, t.Any]] = []
    handler = type("Capture", (_Capture,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_publisher_unreachable_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    publisher = ProxyPublisher(["http://127.0.0.1:9"], timeout=1.0)
    assert publisher.send([close_item("sse:a")]) == 0
    assert "Could not publish to the GRIP proxy" in caplog.text


# -- positions from the Redis history ----------------------------------------


@pytest.fixture
def broker() -> RedisBroker:
    return RedisBroker(fakeredis.FakeRedis(server=fakeredis.FakeServer()), history=5)


def test_publish_entry_gives_the_channels_previous_id(broker: RedisBroker) -> None:
    _, a1, prev = broker.publish_entry("a", ServerSentEvent("1"))
    assert prev == "0-0"
    _, b1, prev = broker.publish_entry("b", ServerSentEvent("2"))
    assert prev == "0-0"
    sse_id, a2, prev = broker.publish_entry("a", ServerSentEvent("3", id="mine"))
    assert (sse_id, prev) == ("mine", a1)
    assert a2 > b1


def test_initial_position_without_cursor(broker: RedisBroker) -> None:
    a1 = broker.publish("a", ServerSentEvent("1"))
    position = initial_position(broker, ["a", "b"], None)
    assert position.events == []
    assert position.prev_ids == {"a": a1, "b": "0-0"}


def test_initial_position_replays_after_cursor_across_channels(broker: RedisBroker) -> None:
    a1 = broker.publish("a", ServerSentEvent("1"))
    b1 = broker.publish("b", ServerSentEvent("2"))
    a2 = broker.publish("a", ServerSentEvent("3"))
    position = initial_position(broker, ["a", "b"], a1)
    assert [event.id for event in position.events] == [b1, a2]
    assert position.prev_ids == {"a": a2, "b": b1}


def test_initial_position_resumes_a_user_id(broker: RedisBroker) -> None:
    broker.publish("a", ServerSentEvent("1", id="first"))
    a2 = broker.publish("a", ServerSentEvent("2"))
    position = initial_position(broker, ["a"], "first")
    assert [event.data for event in position.events] == ["2"]
    assert position.prev_ids == {"a": a2}


def test_initial_position_unknown_cursor_is_a_reset(broker: RedisBroker) -> None:
    a1 = broker.publish("a", ServerSentEvent("1"))
    position = initial_position(broker, ["a"], "nonsense")
    assert [event.event for event in position.events] == ["reset"]
    assert position.events[0].id == a1
    assert position.prev_ids == {"a": a1}


def test_position_after_fills_each_channels_gap(broker: RedisBroker) -> None:
    a1 = broker.publish("a", ServerSentEvent("1"))
    b1 = broker.publish("b", ServerSentEvent("2"))
    a2 = broker.publish("a", ServerSentEvent("3"))
    b2 = broker.publish("b", ServerSentEvent("4"))
    position = position_after(broker, {"a": a1, "b": b1})
    assert [event.id for event in position.events] == [a2, b2]
    assert position.prev_ids == {"a": a2, "b": b2}
    nothing = position_after(broker, {"a": a2, "b": b2})
    assert nothing.events == []
    assert nothing.prev_ids == {"a": a2, "b": b2}


def test_position_after_trimmed_history_is_a_reset(broker: RedisBroker) -> None:
    first = broker.publish("a", ServerSentEvent("0"))
    for n in range(200):  # far past history=5, so MAXLEN ~ trims
        last = broker.publish("a", ServerSentEvent(str(n)))
    position = position_after(broker, {"a": first})
    assert [event.event for event in position.events] == ["reset"]
    assert position.prev_ids == {"a": last}
    assert [e.event for e in position_after(broker, {"a": "garbage"}).events] == ["reset"]


# -- the Flask side ----------------------------------------------------------


def grip_app(
    broker: RedisBroker, proxy_url: str, *, required: bool = False, **config: object
) -> Flask:
    return grip_sse(broker, proxy_url, required=required, **config)[0]


def grip_sse(
    broker: RedisBroker, proxy_url: str, *, required: bool = False, **config: object
) -> tuple[Flask, SSEPush]:
    """An app in GRIP mode whose streams' identity is ``?user=`` (a number)."""
    app = Flask(__name__)
    app.config.update(
        SSE_PUSH_GRIP_URL=proxy_url,
        SSE_PUSH_GRIP_KEY=KEY,
        SSE_PUSH_GRIP_REQUIRED=required,
        SSE_PUSH_RETRY=100,
        **{"SSE_PUSH_MAX_LIFETIME": None, **config},
    )
    sse = SSEPush(app, broker=broker)

    @sse.identify
    def who() -> object:
        # ?user=7 is the number 7: identities compare as their str().
        user = request.args.get("user")
        return None if user is None else int(user)

    return app, sse


def link_of(response: t.Any) -> str:
    return str(response.headers["Grip-Link"][1:].partition(">")[0])


def test_signed_request_is_held_with_its_replay(broker: RedisBroker) -> None:
    app = grip_app(broker, "http://127.0.0.1:9")
    a1 = broker.publish("a", ServerSentEvent("1"))
    a2 = broker.publish("a", ServerSentEvent("2"))
    response = app.test_client().get(
        "/events?channel=a", headers={"Grip-Sig": grip_sig(), "Last-Event-ID": a1}
    )
    assert response.status_code == 200
    assert response.data == b"retry: 100\n: keepalive 15000\n\n" + f"id: {a2}\ndata: 2\n\n".encode()
    assert response.headers["Grip-Hold"] == "stream"
    assert response.headers.getlist("Grip-Channel") == [f"sse:a; prev-id={a2}", "sse:revoke:a"]
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Grip-Link"].startswith("</events/grip/next?token=")
    assert response.headers["Grip-Link"].endswith(">; rel=next")


def test_each_answer_has_a_next_link_of_its_own(broker: RedisBroker) -> None:
    """Pushpin shares one fetch among sessions that ask for the same link,
    whatever their Grip-Last: a shared link would give one stream another's
    missed events."""
    client = grip_app(broker, "http://127.0.0.1:9").test_client()
    links = {
        client.get("/events?channel=a", headers={"Grip-Sig": grip_sig()}).headers["Grip-Link"]
        for _ in range(3)
    }
    assert len(links) == 3


def test_multi_channel_stream_holds_one_set_channel(broker: RedisBroker) -> None:
    app = grip_app(broker, "http://127.0.0.1:9")
    b1 = broker.publish("b", ServerSentEvent("1"))
    broker.publish("a", ServerSentEvent("2"))
    b2 = broker.publish("b", ServerSentEvent("3"))
    response = app.test_client().get(
        "/events?channel=b&channel=a", headers={"Grip-Sig": grip_sig(), "Last-Event-ID": b1}
    )
    assert response.headers.getlist("Grip-Channel") == [
        f"sse:a+b; prev-id={b2}",
        "sse:revoke:b",
        "sse:revoke:a",
    ]
    assert response.data.count(b"data:") == 2
    assert set_items(broker, "a", "9999999999999-0") == [("a+b", b2)]


def test_set_items_chain_the_union_of_the_sets_channels(broker: RedisBroker) -> None:
    assert set_items(broker, "a", "1-0") == []  # no held stream named a set
    register(broker, ["a", "b"])
    register(broker, ["c", "a"])
    a1 = broker.publish("a", ServerSentEvent("1"))
    b1 = broker.publish("b", ServerSentEvent("2"))
    _, a2, prev = broker.publish_entry("a", ServerSentEvent("3"))
    assert prev == a1
    assert sorted(set_items(broker, "a", a2)) == [("a+b", b1), ("a+c", a1)]
    assert set_items(broker, "b", b1) == [("a+b", a1)]


def test_unsigned_request_is_served_the_ordinary_way_or_refused(broker: RedisBroker) -> None:
    forged = {"Grip-Sig": grip_sig("another-secret-of-at-least-32-bytes!!")}
    app = grip_app(broker, "http://127.0.0.1:9", required=True)
    response = app.test_client().get("/events?channel=a", headers=forged)
    assert response.status_code == 403
    assert "Grip-Hold" not in response.headers
    app = grip_app(broker, "http://127.0.0.1:9")
    response = app.test_client().get("/events?channel=a", headers=forged)
    assert "Grip-Hold" not in response.headers
    response.close()


def test_authorize_runs_before_the_hold(broker: RedisBroker) -> None:
    app = Flask(__name__)
    app.config.update(SSE_PUSH_GRIP_URL="http://127.0.0.1:9", SSE_PUSH_GRIP_KEY=KEY)
    sse = SSEPush(app, broker=broker)
    sse.authorize(lambda channel: channel != "secret")
    response = app.test_client().get("/events?channel=secret", headers={"Grip-Sig": grip_sig()})
    assert response.status_code == 403


def test_next_link_sends_what_was_missed(broker: RedisBroker) -> None:
    app = grip_app(broker, "http://127.0.0.1:9")
    client = app.test_client()
    held = client.get("/events?channel=a&channel=b", headers={"Grip-Sig": grip_sig()})
    link = held.headers["Grip-Link"][1:].partition(">")[0]
    a1 = broker.publish("a", ServerSentEvent("1"))
    b1 = broker.publish("b", ServerSentEvent("2"))
    response = client.get(
        link,
        headers={"Grip-Sig": grip_sig(), "Grip-Last": "sse:a+b; last-id=0-0"},
    )
    assert response.status_code == 200
    assert response.data == f"id: {a1}\ndata: 1\n\nid: {b1}\ndata: 2\n\n".encode()
    # One proxy channel for the set, chained in the broker's one id order.
    assert response.headers.getlist("Grip-Channel")[0] == f"sse:a+b; prev-id={b1}"
    assert response.headers["Grip-Link"].endswith("; rel=next; timeout=3600")
    # Not from the proxy, or a link this app did not sign: refused.
    assert client.get(link, headers={"Grip-Last": "sse:a; last-id=0-0"}).status_code == 403
    token = link.partition("token=")[2].partition("&")[0]
    forged = link.replace(token, "WyJzZWNyZXQiXQ.forged")
    assert client.get(forged, headers={"Grip-Sig": grip_sig()}).status_code == 403


def test_publish_goes_to_the_broker_and_once_to_the_proxy(
    broker: RedisBroker, proxy: tuple[str, list[dict[str, t.Any]]]
) -> None:
    url, bodies = proxy
    app, sse = grip_sse(broker, url)
    with app.app_context():
        first = sse.publish("one", channel="a")
        second = sse.publish("two\nlines", channel="a", event="note")
    assert [item["path"] for item in bodies] == ["/publish/", "/publish/"]
    items = [body["items"][0] for body in bodies]
    assert [(item["id"], item["prev-id"]) for item in items] == [(first, "0-0"), (second, first)]
    assert {item["channel"] for item in items} == {"sse:a"}
    assert items[1]["formats"]["http-stream"]["content"] == (
        f"event: note\nid: {second}\ndata: two\ndata: lines\n\n"
    )
    assert broker.read(["a"], firsts={"a": (0, 0)}).entries["a"][-1].event.id == second


def test_grip_mode_needs_the_redis_broker_and_a_key() -> None:
    app = Flask(__name__)
    app.config.update(SSE_PUSH_GRIP_URL="http://127.0.0.1:9", SSE_PUSH_GRIP_KEY=KEY)
    with pytest.raises(ValueError, match="Redis broker"):
        SSEPush(app)
    app = Flask(__name__)
    app.config.update(SSE_PUSH_GRIP_URL="http://127.0.0.1:9")
    redis = RedisBroker(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    with pytest.raises(ValueError, match="SSE_PUSH_GRIP_KEY"):
        SSEPush(app, broker=redis)


def test_revoke_closes_the_held_streams_of_the_channel(
    broker: RedisBroker, proxy: tuple[str, list[dict[str, t.Any]]]
) -> None:
    url, bodies = proxy
    app, sse = grip_sse(broker, url)
    with app.app_context():
        sse.revoke("orders")
        sse.revoke("orders", lambda info: info.identity == "u1")  # cannot reach held ones
    assert [body["items"] for body in bodies] == [
        [
            {
                "channel": "sse:revoke:orders",
                "formats": {"http-stream": {"content": stop_chunk("revoked").decode()}},
            },
            {"channel": "sse:revoke:orders", "formats": {"http-stream": {"action": "close"}}},
        ]
    ]


def test_cli_publish_goes_to_the_proxy_too(
    broker: RedisBroker, proxy: tuple[str, list[dict[str, t.Any]]]
) -> None:
    url, bodies = proxy
    app = grip_app(broker, url)
    result = app.test_cli_runner().invoke(args=["sse", "publish", "--channel", "a", "hello"])
    assert result.exit_code == 0, result.output
    event_id = result.output.strip()
    assert [body["items"][0]["id"] for body in bodies] == [event_id]
    assert bodies[0]["items"][0]["formats"]["http-stream"]["content"] == (
        f"id: {event_id}\ndata: hello\n\n"
    )


# -- revoke by identity, lifetime --------------------------------------------

SECRET = derive_key("app-secret", IDENTITY_LABEL)


def test_held_stream_subscribes_to_its_identity_channels(broker: RedisBroker) -> None:
    client = grip_app(broker, "http://127.0.0.1:9", SECRET_KEY="app-secret").test_client()
    sig = {"Grip-Sig": grip_sig()}
    held = client.get("/events?channel=a&channel=b&user=7", headers=sig)
    names = [value.partition(";")[0] for value in held.headers.getlist("Grip-Channel")]
    assert names == [
        "sse:a+b",
        "sse:revoke:a",
        "sse:revoke:b",
        identity_channel("sse:", SECRET, "7"),
        channel_identity_channel("sse:", SECRET, "a", "7"),
        channel_identity_channel("sse:", SECRET, "b", "7"),
    ]
    # Keyed by the app's secret: the proxy never sees the identity itself, and
    # another app's streams of the same identity are apart.
    assert not any(name.endswith(":7") for name in names)
    assert identity_channel("sse:", derive_key("other", IDENTITY_LABEL), "7") not in names
    # The next link keeps them.
    again = client.get(
        link_of(held), headers={**sig, "Grip-Last": "sse:a+b; last-id=0-0"}
    ).headers.getlist("Grip-Channel")
    assert [value.partition(";")[0] for value in again] == names
    # An anonymous stream has only its channels'.
    anonymous = client.get("/events?channel=a", headers=sig).headers.getlist("Grip-Channel")
    assert [value.partition(";")[0] for value in anonymous] == ["sse:a", "sse:revoke:a"]


def test_revoke_by_identity_closes_that_identitys_held_streams(
    broker: RedisBroker, proxy: tuple[str, list[dict[str, t.Any]]]
) -> None:
    url, bodies = proxy
    app, sse = grip_sse(broker, url, SECRET_KEY="app-secret")
    client = app.test_client()
    sig = {"Grip-Sig": grip_sig()}
    held = {
        user: [
            value.partition(";")[0]
            for value in client.get(
                f"/events?channel=orders&channel=news&user={user}", headers=sig
            ).headers.getlist("Grip-Channel")
        ]
        for user in (7, 8)
    }
    with app.app_context():
        sse.revoke(identity="7")
        sse.revoke("orders", identity=8, reconnect=True)
        sse.revoke(identity=8, predicate=lambda info: True)  # cannot reach held ones
    closed = [body["items"] for body in bodies]
    assert len(closed) == 2
    by_identity, by_pair = (items[0]["channel"] for items in closed)
    for items, chunk in zip(
        closed, [stop_chunk("revoked"), closing_chunk("revoked", 100)], strict=True
    ):
        channel = items[0]["channel"]
        assert items == [
            {"channel": channel, "formats": {"http-stream": {"content": chunk.decode()}}},
            {"channel": channel, "formats": {"http-stream": {"action": "close"}}},
        ]
    # Each revoke closes a channel that the selected streams hold and the
    # others do not.
    assert by_identity in held[7] and by_identity not in held[8]
    assert by_pair in held[8] and by_pair not in held[7]
    news_only = client.get("/events?channel=news&user=8", headers=sig)
    assert by_pair not in news_only.headers.getlist("Grip-Channel")


def test_link_timeout() -> None:
    assert link_timeout(None, None, 100.0) is None
    assert link_timeout(None, 3600, 100.0) == 3600
    assert link_timeout(101.2, None, 100.0) == 2
    assert link_timeout(99.0, None, 100.0) == 1
    assert link_timeout(5000.0, 3600, 100.0) == 3600


def test_held_stream_ends_at_its_lifetime(
    broker: RedisBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = grip_app(broker, "http://127.0.0.1:9", SSE_PUSH_MAX_LIFETIME=100.0)
    client = app.test_client()
    sig = {"Grip-Sig": grip_sig()}
    held = client.get("/events?channel=a", headers=sig)
    timeout = int(held.headers["Grip-Link"].rpartition("timeout=")[2])
    assert 80 <= timeout <= 100  # 80 to 100 % of the lifetime
    a1 = broker.publish("a", ServerSentEvent("1"))
    # Before the deadline, a gap's fetch holds the stream on, to the same deadline.
    early = client.get(link_of(held), headers={**sig, "Grip-Last": "sse:a; last-id=0-0"})
    assert early.headers["Grip-Hold"] == "stream"
    assert int(early.headers["Grip-Link"].rpartition("timeout=")[2]) in (timeout - 1, timeout)
    a2 = broker.publish("a", ServerSentEvent("2"))
    real = time.time
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: real() + 101)
        late = client.get(link_of(early), headers={**sig, "Grip-Last": f"sse:a; last-id={a1}"})
    # Past it: the events the proxy lacks, the retry, and no instructions, so
    # the proxy ends the stream and the client resumes from a2.
    assert "Grip-Hold" not in late.headers
    assert late.data == f"id: {a2}\ndata: 2\n\n".encode() + closing_chunk("lifetime", 100)


def test_next_link_given_before_holds_carried_more_still_works(broker: RedisBroker) -> None:
    """Streams held across an upgrade keep their links: a token of the
    channel list alone, as links were before."""
    app = grip_app(broker, "http://127.0.0.1:9")
    a1 = broker.publish("a", ServerSentEvent("1"))
    with app.app_context():
        token = app.extensions["sse_push.grip"].tokens().dumps(["a"])
    response = app.test_client().get(
        f"/events/grip/next?token={token}",
        headers={"Grip-Sig": grip_sig(), "Grip-Last": "sse:a; last-id=0-0"},
    )
    assert response.status_code == 200
    assert response.data == f"id: {a1}\ndata: 1\n\n".encode()
    assert response.headers.getlist("Grip-Channel") == [f"sse:a; prev-id={a1}", "sse:revoke:a"]
