"""The configuration table: it checks every key at ``init_app`` and is the docs' key table."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
from flask import Flask

from flask_sse_push import SSEPush
from flask_sse_push.config import KEYS, Key, load, markdown_table, update_page

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"


def test_the_committed_page_shows_the_table() -> None:
    """docs/configuration.md is what the table generates; if this fails, run
    ``python docs/_gen_config.py`` and commit the page."""
    text = PAGE.read_text(encoding="utf-8")
    assert update_page(text) == text, "run python docs/_gen_config.py"


def test_a_new_row_makes_the_page_out_of_date() -> None:
    """The check above can fail: one more row changes what the page must hold."""
    text = PAGE.read_text(encoding="utf-8")
    extra = Key("SSE_PUSH_EXAMPLE", int, 3, "an example", minimum=1)
    updated = update_page(text, (*KEYS, extra))
    assert updated != text
    assert "| `SSE_PUSH_EXAMPLE` | an int number >= 1 | `3` | an example |" in updated
    assert update_page(updated, (*KEYS, extra)) == updated


def test_a_page_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="section to fill in"):
        update_page("# Configuration\n\n| key |\n")


def test_a_pipe_in_a_description_does_not_split_its_cell() -> None:
    table = markdown_table([Key("SSE_PUSH_X", str, "a|b", "x | y")])
    assert table.splitlines()[-1] == '| `SSE_PUSH_X` | a str | `"a\\|b"` | x \\| y |'


def test_names_are_unique_and_prefixed() -> None:
    names = [key.name for key in KEYS]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"SSE_PUSH_[A-Z_]+", name) for name in names)


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_every_default_passes_its_own_check(key: Key) -> None:
    assert key.validate(key.default) == key.default


def _bad_values(key: Key) -> list[object]:
    """Values of the wrong type for ``key``, and values just out of its bounds."""
    wrong_type: dict[type, list[object]] = {
        float: ["15", True, None],
        int: ["10", 2.5, True, None],
        bool: [1, "yes", None],
        str: [5, b"/events", None],
        list: [5, "room.*", [5]],
    }
    bad = [value for value in wrong_type[key.type] if not (value is None and key.optional)]
    if key.name == "SSE_PUSH_CORS_ORIGINS":
        bad.append(["https://ok.example", "not an origin"])
    if key.minimum is not None:
        edge = key.minimum if key.above else key.minimum - 1
        bad.append(key.type(edge))
    return bad


_CASES = [(key, value) for key in KEYS for value in _bad_values(key)]


@pytest.mark.parametrize(
    ("key", "value"), _CASES, ids=[f"{key.name}={value!r}" for key, value in _CASES]
)
def test_init_app_refuses_a_bad_value_and_says_what_to_write(
    app: Flask, key: Key, value: object
) -> None:
    app.config[key.name] = value
    with pytest.raises(ValueError) as raised:
        SSEPush(app)
    message = str(raised.value)
    assert key.name in message
    assert "sse_push" not in app.extensions
    if key.check is None:
        # What it takes, and where to set it.
        assert f"must be {key.expected}, not {value!r}" in message
        assert f"app.config[{key.name!r}]" in message


def test_messages_say_the_bound_and_the_unit() -> None:
    seconds = next(key for key in KEYS if key.name == "SSE_PUSH_KEEPALIVE")
    with pytest.raises(ValueError, match=r"a number of seconds > 0, not 0\. Set app\.config"):
        seconds.validate(0)
    retry = next(key for key in KEYS if key.name == "SSE_PUSH_RETRY")
    with pytest.raises(ValueError, match=r"None or an int number of milliseconds >= 0, not -1"):
        retry.validate(-1)


def test_init_app_uses_the_checked_values(app: Flask) -> None:
    """An int number of seconds becomes a float; the origins are normalised."""
    app.config.update(
        SSE_PUSH_KEEPALIVE=7,
        SSE_PUSH_MAX_LIFETIME=None,
        SSE_PUSH_RETRY=0,
        SSE_PUSH_MAX_CONNECTIONS=3,
        SSE_PUSH_HISTORY=0,
        SSE_PUSH_CORS_ORIGINS=["HTTPS://App.Example.com/"],
    )
    SSEPush(app)
    settings = app.extensions["sse_push"].settings
    assert isinstance(settings.keepalive, float) and settings.keepalive == 7.0
    assert settings.max_lifetime is None
    assert settings.retry == 0
    assert settings.max_connections == 3
    assert app.extensions["sse_push"].broker.history == 0
    # The app's own config keeps what the app wrote.
    assert app.config["SSE_PUSH_KEEPALIVE"] == 7
    response = app.test_client().get(
        "/events", headers={"Origin": "https://app.example.com", "Accept": "text/event-stream"}
    )
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    response.close()


def test_load_sets_defaults_and_keeps_what_is_set() -> None:
    config: dict[str, object] = {"SSE_PUSH_URL_PREFIX": "/stream"}
    values = load(config)
    assert values["SSE_PUSH_URL_PREFIX"] == "/stream"
    assert config == {key.name: key.default for key in KEYS} | {"SSE_PUSH_URL_PREFIX": "/stream"}
    assert set(values) == {key.name for key in KEYS}


def test_keys_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KEYS[0].default = 1  # type: ignore[misc]


def _config_keys_read_in_the_package() -> set[str]:
    """Every ``SSE_PUSH_*`` string the package's code subscripts or calls with."""
    found = set()
    for path in (ROOT / "flask_sse_push").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Subscript):
                candidates = [node.slice]
            elif isinstance(node, ast.Call):
                candidates = list(node.args)
            else:
                continue
            for value in candidates:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    if re.fullmatch(r"SSE_PUSH_[A-Z_]+", value.value):
                        found.add(value.value)
    return found


def test_every_key_the_package_reads_is_in_the_table() -> None:
    """A key read anywhere (``config["SSE_PUSH_X"]``) but missing from the table
    would have no default, no check and no documentation."""
    read = _config_keys_read_in_the_package()
    assert "SSE_PUSH_KEEPALIVE" in read  # the scan sees the reads in extension.py
    assert read <= {key.name for key in KEYS}


def test_init_app_docstring_points_to_the_page_instead_of_listing_keys() -> None:
    doc = SSEPush.init_app.__doc__ or ""
    assert ":doc:`configuration`" in doc
    assert not re.search(r"SSE_PUSH_[A-Z]", doc)
