"""A small app for integration tests: the extension plus a probe of its state.

Run under gunicorn as ``tests.apps.probe_app:create_app()``.
"""

from __future__ import annotations

import gc
import os

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from flask_sse_push import SSEPush


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_PUSH_KEEPALIVE"] = float(os.environ.get("SSE_PUSH_KEEPALIVE", "0.2"))
    app.config.setdefault("SSE_PUSH_MAX_STREAMS_PER_CLIENT", 1_000_000)  # all from 127.0.0.1
    sse = SSEPush(app)

    @app.get("/_probe")
    def probe() -> ResponseReturnValue:
        try:
            from greenlet import greenlet
        except ImportError:  # pragma: no cover - gevent is installed for the tests
            greenlets = -1
        else:
            greenlets = sum(isinstance(o, greenlet) and not o.dead for o in gc.get_objects())
        return jsonify(
            pid=os.getpid(),
            subscribers=sse.broker.subscriber_count(),
            greenlets=greenlets,
            fds=len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1,
        )

    return app
