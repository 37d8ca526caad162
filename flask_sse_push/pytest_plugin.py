"""The ``sse_stream`` pytest fixture, loaded by ``pytest -p flask_sse_push.testing``.

It is kept out of :mod:`flask_sse_push.testing` so that module imports without
pytest.

.. versionadded:: 0.1
"""

from __future__ import annotations

import typing as t

import pytest

from .testing import TestStream, open_stream

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from flask import Flask

__all__ = ["sse_stream"]


@pytest.fixture
def sse_stream(app: Flask) -> Iterator[t.Callable[..., TestStream]]:
    """Open streams on the ``app`` fixture's test client; they close after the test.

    It takes the arguments of :func:`~flask_sse_push.testing.open_stream` after
    ``client``.

    .. code-block:: python

        def test_push(app, sse_stream):
            stream = sse_stream(channels=["news"])

    .. versionadded:: 0.1
    """
    opened: list[TestStream] = []
    client = app.test_client()

    def opener(path: str = "/events", **kwargs: t.Any) -> TestStream:
        stream = open_stream(client, path, **kwargs)
        opened.append(stream)
        return stream

    yield opener
    for stream in opened:
        stream.close()
