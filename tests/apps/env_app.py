"""The example app, configured from the environment, for tests that serve it with gunicorn.

``EXAMPLE_APP_CONFIG`` holds a JSON object of config keys, like
``{"SSE_PUSH_KEEPALIVE": 0.3}``. A test can so set any key in a server process it
starts, without the example app having to read that key from the environment.
"""

from __future__ import annotations

import json
import os
import typing as t

from flask import Flask, Response

import example_app

#: The environment variable :func:`create_app` reads its config from.
CONFIG_VARIABLE = "EXAMPLE_APP_CONFIG"


def environment(**config: object) -> dict[str, str]:
    """Return the environment that makes :func:`create_app` use ``config``."""
    return {CONFIG_VARIABLE: json.dumps(config)}


def _config() -> dict[str, t.Any]:
    config = json.loads(os.environ.get(CONFIG_VARIABLE, "{}"))
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG_VARIABLE} must hold a JSON object, not {config!r}.")
    return config


def create_app() -> Flask:
    """The example app, with the config in ``EXAMPLE_APP_CONFIG``."""
    # Every client of these tests comes from 127.0.0.1: no per-client limit
    # unless the test sets one.
    return example_app.create_app({"SSE_PUSH_MAX_STREAMS_PER_CLIENT": 1_000_000, **_config()})


def create_app_without_accel_buffering() -> Flask:
    """The same app, but its responses lack ``X-Accel-Buffering: no``.

    This is what a streaming view that does not set the header looks like to a
    proxy; the nginx tests compare it with the real thing.
    """
    app = create_app()

    @app.after_request
    def drop_accel_buffering(response: Response) -> Response:
        del response.headers["X-Accel-Buffering"]
        return response

    return app
