"""``GET /events/session-key`` and ``sse.session_key()``: one key per identity,
keyed by ``SECRET_KEY``, never cached."""

from __future__ import annotations

import pytest
from flask import Flask, request

from flask_sse_push import SSEPush
from flask_sse_push.session_scope import scope_secret, session_key


def _app(secret: str = "one secret") -> tuple[Flask, SSEPush]:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY=secret)
    sse = SSEPush(app)

    @sse.identify
    def who() -> object:
        user = request.headers.get("X-User")
        return int(user) if user is not None and user.isdigit() else user

    return app, sse


def key(app: Flask, user: str | None) -> str:
    headers = {} if user is None else {"X-User": user}
    answer = app.test_client().get("/events/session-key", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store" and "Cookie" in answer.headers["Vary"]
    found: str = answer.get_json()["key"]
    return found


def test_one_key_per_identity() -> None:
    app, sse = _app()
    alice, bob, anonymous = key(app, "alice"), key(app, "bob"), key(app, None)
    assert len({alice, bob, anonymous}) == 3
    assert key(app, "alice") == alice and len(alice) == 43
    # Compared as text, as revokes compare identities: 7 and "7" are one user.
    assert key(app, "7") == session_key(scope_secret("one secret"), "7")
    with app.test_request_context(headers={"X-User": "alice"}):
        assert sse.session_key() == alice


def test_the_key_depends_on_the_secret_and_hides_the_identity() -> None:
    first, _ = _app("one secret")
    second, _ = _app("another secret")
    assert key(first, "alice") != key(second, "alice")
    assert "alice" not in key(first, "alice")


def test_anonymous_without_an_identify_hook(app: Flask) -> None:
    app.config["SECRET_KEY"] = "s"
    SSEPush(app)
    assert key(app, "alice") == key(app, None) == session_key(scope_secret("s"), None)


def test_session_key_needs_a_request(app: Flask) -> None:
    sse = SSEPush(app)
    with app.app_context(), pytest.raises(RuntimeError, match="in a view"):
        sse.session_key()
