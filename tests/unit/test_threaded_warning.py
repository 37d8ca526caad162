"""The threaded-server warning names the app as the user's gunicorn command must."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

import example_app
from flask_sse_push.servers.threaded import Waitress


def _warning(app: Flask, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.WARNING, "flask_sse_push"):
        app.extensions["sse_push"].start(Waitress({}))
    [message] = [r.getMessage() for r in caplog.records if "holds one thread" in r.getMessage()]
    return message


def test_an_app_without_a_factory_is_named_by_its_global(caplog: pytest.LogCaptureFixture) -> None:
    """Before: always 'app:create_app()', which fails for a module with a plain ``app``."""
    from tests.apps import plain_app

    message = _warning(plain_app.app, caplog)
    assert "GeventWorker 'tests.apps.plain_app:app'" in message
    assert "create_app" not in message


def test_an_app_from_a_factory_is_named_by_the_factory(caplog: pytest.LogCaptureFixture) -> None:
    message = _warning(example_app.create_app(), caplog)
    assert "GeventWorker 'example_app:create_app()'" in message
