"""The classic SSE demo, on Flask-SSE-Push.

Run it with::

    gunicorn -k flask_sse_push.servers.gunicorn.GeventWorker -w 1 \
        -b 127.0.0.1:8000 'example_app:create_app()'

``GET /api/sse`` streams a fixed countdown that resumes where the client left
off; ``GET /events?channel=default`` streams whatever ``POST /api/publish`` sends.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask, Response, jsonify, render_template, request

from flask_sse_push import SSEPush, last_event_id

from .countdown import countdown, resume_step

sse = SSEPush()


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the demo app. ``COUNTDOWN_INTERVAL`` (seconds) may come from the
    environment or from ``config``."""
    app = Flask(__name__)
    app.config["COUNTDOWN_INTERVAL"] = float(os.environ.get("COUNTDOWN_INTERVAL", "1.0"))
    # Reconnect quickly after a server restart; the browser default is ~3 s.
    app.config["SSE_PUSH_RETRY"] = 1000
    # Scale out: SSE_PUSH_BROKER_URL=redis://host:6379/0 lets gunicorn run -w N.
    if os.environ.get("SSE_PUSH_BROKER_URL"):
        app.config["SSE_PUSH_BROKER_URL"] = os.environ["SSE_PUSH_BROKER_URL"]
    if config:
        app.config.update(config)
    sse.init_app(app)

    @app.get("/")
    def index() -> str:
        return render_template("index.html", cursor=sse.cursor("default"))

    @app.get("/api/sse")
    def countdown_stream() -> Response:
        try:
            step = resume_step(last_event_id())
        except ValueError as exc:
            return Response(f"{exc}\n", status=400, content_type="text/plain")
        if step is None:
            # The client has seen the final event: 204 tells EventSource to stop.
            return Response(status=204)
        return sse.stream(countdown(step, float(app.config["COUNTDOWN_INTERVAL"])))

    @app.post("/api/publish")
    def publish() -> tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or "data" not in body:
            return jsonify(error='Send JSON like {"data": "hello"}.'), 400
        try:
            event_id = sse.publish(
                body["data"],
                event=body.get("event") or None,
                channel=body.get("channel") or "default",
            )
        except (TypeError, ValueError) as exc:
            return jsonify(error=str(exc)), 400
        return jsonify(id=event_id), 200

    return app
