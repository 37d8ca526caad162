"""The self-check of the gunicorn and gevent internals the fast path relies on."""

from __future__ import annotations

import typing as t

import pytest

from flask_sse_push.servers import _gunicorn_internals as internals


class Socket:
    _sock = object()


class Response:
    chunked = True
    sent = 0
    response_length = None
    status = "200 OK"
    headers: t.ClassVar[list[tuple[str, str]]] = []
    req = None

    def start_response(self, *args: object) -> None:
        """Stands for gunicorn's bound ``start_response``."""

    def write(self, data: bytes) -> None:
        """Stands for gunicorn's ``write``."""


class Hub:
    thread_ident = 1


def _without(kind: type, name: str) -> object:
    """An instance of a subclass of ``kind`` on which ``name`` is missing."""
    lacking = type(f"No{name}", (), {k: v for k, v in vars(kind).items() if k != name})
    return lacking()


def test_nothing_is_missing_when_every_attribute_is_there() -> None:
    assert internals.missing(Socket(), Response(), Hub()) == []


@pytest.mark.parametrize(
    ("kind", "label", "names"),
    [
        (Socket, "socket", internals.SOCKET_ATTRIBUTES),
        (Response, "Response", internals.RESPONSE_ATTRIBUTES),
        (Hub, "Hub", internals.HUB_ATTRIBUTES),
    ],
)
def test_each_missing_attribute_is_named(kind: type, label: str, names: tuple[str, ...]) -> None:
    for name in names:
        objects: dict[str, object] = {"sock": Socket(), "response": Response(), "hub": Hub()}
        key = {"socket": "sock", "Response": "response", "Hub": "hub"}[label]
        objects[key] = _without(kind, name)
        assert internals.missing(**objects) == [f"{label}.{name}"]


def test_the_installed_gunicorn_and_gevent_pass() -> None:
    assert internals.self_check() is None


def test_an_attribute_a_release_dropped_makes_a_warning_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The real objects, asked for one more attribute than they have: as after an
    # upgrade that renamed one.
    monkeypatch.setattr(
        internals, "RESPONSE_ATTRIBUTES", (*internals.RESPONSE_ATTRIBUTES, "renamed_field")
    )
    warning = internals.self_check()
    assert warning is not None
    assert "Response.renamed_field" in warning
    assert "without direct writes" in warning
    assert "install" in warning


def test_omits_body_is_false_where_gunicorn_has_no_such_field() -> None:
    assert internals.omits_body(Response()) is False
    omitting = Response()
    t.cast("t.Any", omitting)._omits_body = True
    assert internals.omits_body(omitting) is True
