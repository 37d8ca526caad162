"""Fixtures every test may use: a Flask app, the extension on it, a key prefix.

Fixtures that start processes are in ``tests/integration/conftest.py``; the
guard that keeps processes out of unit tests is in ``tests/unit/conftest.py``.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest
from flask import Flask

from flask_sse_push import SSEPush
from tests.support.servers import STRICT

if t.TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def app() -> Flask:
    """A fresh app with a short keepalive, the extension not yet registered."""
    app = Flask(__name__)
    app.config.update(TESTING=True, SSE_PUSH_KEEPALIVE=0.05)
    return app


@pytest.fixture
def sse(app: Flask) -> Iterator[SSEPush]:
    """The extension, registered on :func:`app`, inside an app context."""
    extension = SSEPush(app)
    with app.app_context():
        yield extension


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}:"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under SSE_PUSH_TESTS_STRICT=1 a skipped test fails the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if STRICT and reporter is not None and reporter.stats.get("skipped"):
        reporter.write_line("SSE_PUSH_TESTS_STRICT=1: tests were skipped; install what they need.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
