"""``SSE_PUSH_SERVER``: the server family named or recognized, and the line that says so."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from flask_sse_push import SSEPush
from flask_sse_push.runtime import get_runtime
from flask_sse_push.servers import FAMILIES
from flask_sse_push.servers.base import Server
from flask_sse_push.servers.threaded import Werkzeug


def _app(**config: object) -> Flask:
    app = Flask("choice")
    app.config.update(config)
    SSEPush(app)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    return app


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flask_sse_push"]


@pytest.mark.parametrize("value", ["uwsgi2", "", 3, True])
def test_a_wrong_value_is_an_error_that_lists_the_choices(value: object) -> None:
    with pytest.raises(ValueError, match="SSE_PUSH_SERVER must be one of") as raised:
        _app(SSE_PUSH_SERVER=value)
    for family in FAMILIES:
        assert repr(family) in str(raised.value)


def test_the_default_detects_and_one_info_line_names_the_choice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="flask_sse_push")
    app = _app()
    assert app.config["SSE_PUSH_SERVER"] == "detect"
    client = app.test_client()
    client.get("/ping")
    client.get("/ping")
    lines = [m for m in _messages(caplog) if m.startswith("flask_sse_push serves streams on")]
    assert len(lines) == 1
    assert "(SSE_PUSH_SERVER=detect)" in lines[0] and "capacity:" in lines[0]


def test_a_named_family_is_used_without_its_mark_in_the_environ(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The test client's environ names no server: named, Werkzeug is still chosen."""
    caplog.set_level(logging.INFO, logger="flask_sse_push")
    app = _app(SSE_PUSH_SERVER="Werkzeug")
    app.test_client().get("/ping", environ_base={"SERVER_SOFTWARE": "proxy/1.0"})
    assert type(get_runtime(app).server) is Werkzeug
    assert any("(SSE_PUSH_SERVER=werkzeug)" in m for m in _messages(caplog))


def test_plain_assumes_nothing_even_on_a_recognized_server() -> None:
    app = _app(SSE_PUSH_SERVER="plain")
    app.test_client().get("/ping", environ_base={"SERVER_SOFTWARE": "waitress"})
    runtime = get_runtime(app)
    assert type(runtime.server) is Server
    assert runtime.registry.max_connections is None


def test_a_named_family_that_does_not_serve_the_app_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Named uWSGI, but no uWSGI process: streams run on the plain fallback, and the
    log says how to fix the setting."""
    app = _app(SSE_PUSH_SERVER="uwsgi")
    app.test_client().get("/ping")
    assert type(get_runtime(app).server) is Server
    assert any(
        "SSE_PUSH_SERVER is 'uwsgi', but this request is not served by it" in m
        for m in _messages(caplog)
    )
