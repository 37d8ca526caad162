"""Streams spread evenly over the workers of a ``gunicorn -w 2`` under test."""

from __future__ import annotations

import time
import typing as t

import pytest

from tests.support.redis_helpers import SSEClient, pump

#: The workers the cross-worker tests run.
WORKERS = 2


def answered(clients: list[SSEClient]) -> t.Callable[[], bool]:
    return lambda: all(c.status is not None for c in clients)


def ended(clients: list[SSEClient]) -> t.Callable[[], bool]:
    return lambda: all(c.ended for c in clients)


def spread(port: int, path: str, count: int) -> list[SSEClient]:
    """``count`` streams of ``path``, half of them served by each worker.

    Streams are opened one at a time; one that lands on a worker that has its
    share already is closed again.
    """
    share = count // WORKERS
    kept: dict[str, list[SSEClient]] = {}
    for _ in range(400):
        client = SSEClient(port, path)
        pump([client], answered([client]), what="headers")
        assert client.status == 200 and client.worker is not None
        mine = kept.setdefault(client.worker, [])
        if len(mine) < share:
            mine.append(client)
        else:
            client.close()
            time.sleep(0.05)  # let the other worker get to its accept
        if len(kept) == WORKERS and all(len(group) == share for group in kept.values()):
            return [client for group in kept.values() for client in group]
    pytest.fail("the streams never spread over both workers")
