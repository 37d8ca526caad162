"""An app with Prometheus metrics in multiprocess mode, for gunicorn -w N tests.

``PROMETHEUS_MULTIPROC_DIR`` and ``SSE_PUSH_BROKER_URL`` come from the environment.
"""

from __future__ import annotations

import os

from flask import Flask, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from flask_sse_push import SSEPush


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SSE_PUSH_PROMETHEUS=True,
        SSE_PUSH_KEEPALIVE=0.2,
        SSE_PUSH_BROKER_URL=os.environ["SSE_PUSH_BROKER_URL"],
    )
    app.config.setdefault("SSE_PUSH_MAX_STREAMS_PER_CLIENT", 1_000_000)  # all from 127.0.0.1
    SSEPush(app)

    @app.after_request
    def tag_worker(response: Response) -> Response:
        response.headers["X-Worker-PID"] = str(os.getpid())
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), content_type="text/plain; version=0.0.4")

    return app
