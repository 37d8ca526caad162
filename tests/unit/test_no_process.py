"""Inside a unit test, starting a process raises instead of starting it."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest

from tests.support.no_process import ProcessStarted


def test_subprocess_is_refused() -> None:
    with pytest.raises(ProcessStarted, match="tests/integration/"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_fork_is_refused() -> None:
    with pytest.raises(ProcessStarted):
        if os.fork() == 0:  # pragma: no cover - only if the guard is missing
            os._exit(0)


def test_os_system_is_refused() -> None:
    with pytest.raises(ProcessStarted):
        os.system("true")


def test_multiprocessing_spawn_is_refused() -> None:
    process = multiprocessing.get_context("spawn").Process(target=print)
    with pytest.raises(ProcessStarted):
        process.start()


def test_catching_exception_does_not_hide_it() -> None:
    """Code under test that swallows ``Exception`` still fails the test."""
    with pytest.raises(ProcessStarted):
        try:
            subprocess.run(["true"], check=False)
        except Exception:  # noqa: BLE001 - the point of the test
            pass
