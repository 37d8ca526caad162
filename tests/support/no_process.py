"""A guard that makes starting a process raise, for tests that promise to start none.

Every way Python starts a process ends in one of the functions patched here:
``subprocess`` (and so ``asyncio`` and ``os.popen``) in ``Popen._execute_child``;
multiprocessing's spawn and forkserver methods in ``_posixsubprocess.fork_exec``;
``os.spawn*``, ``pty`` and the fork method in ``os.fork`` or ``os.forkpty``; and
``os.system``; ``os.posix_spawn`` too. Inside
:func:`no_process_started` they raise :class:`ProcessStarted` instead.
``tests/unit/conftest.py`` holds it around every unit test.
"""

from __future__ import annotations

import _posixsubprocess
import contextlib
import os
import subprocess
import typing as t

import pytest

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: (module or class, function) pairs that start a process.
STARTERS: list[tuple[t.Any, str]] = [
    (subprocess.Popen, "_execute_child"),
    (_posixsubprocess, "fork_exec"),
    (os, "posix_spawn"),
    (os, "posix_spawnp"),
    (os, "fork"),
    (os, "forkpty"),
    (os, "system"),
]


class ProcessStarted(BaseException):
    """A unit test tried to start a process.

    A :class:`BaseException`, so that code under test catching ``Exception`` or
    ``OSError`` cannot hide it.
    """


def _refuse(name: str) -> Callable[..., t.NoReturn]:
    def refuse(*args: object, **kwargs: object) -> t.NoReturn:
        raise ProcessStarted(
            f"{name}() was called from a unit test: unit tests start no process."
            " Move the test to tests/integration/."
        )

    return refuse


@contextlib.contextmanager
def no_process_started() -> Iterator[None]:
    """Make every function in :data:`STARTERS` raise :class:`ProcessStarted`."""
    with pytest.MonkeyPatch.context() as patch:
        for owner, name in STARTERS:
            if hasattr(owner, name):
                patch.setattr(owner, name, _refuse(f"{owner.__name__}.{name}"))
        yield
