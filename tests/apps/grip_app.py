"""An app in GRIP mode on the Redis broker, for the Pushpin tests and the bench.

It reads ``SSE_PUSH_BROKER_URL``, ``SSE_PUSH_GRIP_URL``, ``SSE_PUSH_GRIP_KEY``
and ``SSE_PUSH_GRIP_REQUIRED`` (``1``), and optionally ``SSE_PUSH_KEEPALIVE``
and ``SSE_PUSH_MAX_LIFETIME``, from the environment. A stream's identity is its
``?user=``. ``POST /publish`` publishes its form's ``data`` to its ``channel``,
and answers with the id; ``POST /revoke`` revokes its form's ``channel`` and
``user`` (either may be left out); ``GET /rss`` gives the worker's memory.
"""

from __future__ import annotations

import os
import resource

from flask import Flask, request

from flask_sse_push import SSEPush


def create_app() -> Flask:
    """Build the app; the Redis and GRIP variables must be set."""
    app = Flask(__name__)
    app.config.update(
        SSE_PUSH_BROKER_URL=os.environ["SSE_PUSH_BROKER_URL"],
        SSE_PUSH_GRIP_URL=os.environ["SSE_PUSH_GRIP_URL"],
        SSE_PUSH_GRIP_KEY=os.environ["SSE_PUSH_GRIP_KEY"],
        SSE_PUSH_GRIP_REQUIRED=os.environ.get("SSE_PUSH_GRIP_REQUIRED") == "1",
        SSE_PUSH_KEEPALIVE=float(os.environ.get("SSE_PUSH_KEEPALIVE", "15")),
        SSE_PUSH_MAX_LIFETIME=float(os.environ.get("SSE_PUSH_MAX_LIFETIME", "600")),
        SSE_PUSH_RETRY=100,
    )
    sse = SSEPush(app)

    @sse.identify
    def user() -> str | None:
        return request.args.get("user")

    @app.post("/publish")
    def publish() -> str:
        channel = request.form.get("channel", "default")
        return sse.publish(request.form["data"], channel=channel)

    @app.post("/revoke")
    def revoke() -> str:
        return str(sse.revoke(request.form.get("channel"), identity=request.form.get("user")))

    @app.get("/rss")
    def rss() -> dict[str, int]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(f"/proc/{os.getpid()}/statm") as statm:
            pages = int(statm.read().split()[1])
        return {
            "pid": os.getpid(),
            "rss_kib": pages * os.sysconf("SC_PAGE_SIZE") // 1024,
            "max_rss_kib": usage.ru_maxrss,
        }

    return app
