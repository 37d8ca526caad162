"""A small app on the Redis broker, for gunicorn and ``flask`` CLI tests.

It reads ``SSE_PUSH_BROKER_URL``, ``SSE_PUSH_REDIS_PREFIX`` and
``SSE_PUSH_KEEPALIVE`` from the environment, and says which worker answered in an
``X-Worker-PID`` header.
"""

from __future__ import annotations

import os

from flask import Flask, Response

from flask_sse_push import SSEPush


def create_app() -> Flask:
    """Build the app; ``SSE_PUSH_BROKER_URL`` must be set."""
    app = Flask(__name__)
    app.config.update(
        SSE_PUSH_BROKER_URL=os.environ["SSE_PUSH_BROKER_URL"],
        SSE_PUSH_REDIS_PREFIX=os.environ.get("SSE_PUSH_REDIS_PREFIX", "sse:"),
        SSE_PUSH_KEEPALIVE=float(os.environ.get("SSE_PUSH_KEEPALIVE", "1.0")),
        SSE_PUSH_RETRY=100,
    )
    app.config.setdefault("SSE_PUSH_MAX_STREAMS_PER_CLIENT", 1_000_000)  # all from 127.0.0.1
    SSEPush(app)

    @app.after_request
    def worker_pid(response: Response) -> Response:
        response.headers["X-Worker-PID"] = str(os.getpid())
        return response

    return app
