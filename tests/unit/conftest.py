"""Unit tests start no process: no server, no ``subprocess``, no ``fork``.

While a unit test's fixtures are set up, while it runs and while it is torn
down, every function that starts a process raises
:class:`tests.support.no_process.ProcessStarted`. A test that needs a process
belongs in ``tests/integration/``.
"""

from __future__ import annotations

import typing as t

import fakeredis
import pytest

from tests.support.control_helpers import Worker
from tests.support.no_process import no_process_started

if t.TYPE_CHECKING:
    from collections.abc import Iterator


# Hooks, not an autouse fixture: a module- or session-scoped fixture is set up
# before any function-scoped fixture, so only the whole setup phase covers it.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with no_process_started():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with no_process_started():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    with no_process_started():
        return (yield)


@pytest.fixture
def workers() -> Iterator[tuple[Worker, Worker]]:
    """Two apps sharing one fake Redis, as two workers of a deployment share one."""
    server = fakeredis.FakeServer()
    first, second = Worker(server), Worker(server)
    yield first, second
    first.close()
    second.close()
