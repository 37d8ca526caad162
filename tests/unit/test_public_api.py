"""``flask_sse_push.__all__`` is sorted and complete, and every public object has a
docstring with ``versionadded``.
"""

from __future__ import annotations
import __future__

import types

import flask_sse_push


def test_all_is_sorted() -> None:
    assert flask_sse_push.__all__ == sorted(flask_sse_push.__all__)


def test_all_is_complete_and_exists() -> None:
    """Every public object in the package namespace is exported, and nothing else."""
    public = {
        name
        for name, value in vars(flask_sse_push).items()
        if not name.startswith("_")
        and not isinstance(value, (types.ModuleType, __future__._Feature))
    }
    assert public == set(flask_sse_push.__all__) - {"RedisBroker"}
    for name in flask_sse_push.__all__:
        assert getattr(flask_sse_push, name) is not None


def test_public_objects_have_docstrings_with_versionadded() -> None:
    for name in flask_sse_push.__all__:
        doc = getattr(flask_sse_push, name).__doc__ or ""
        assert "versionadded" in doc, name
