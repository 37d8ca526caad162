"""The flask-sse (the incumbent) bench app, used the way its README shows.

Run it with ``gunicorn -k gevent 'app_flask_sse:create_app()'`` and
``SSE_REDIS_URL`` set. Clients stream from ``/stream``.
"""

from __future__ import annotations

import os

import gevent
from flask import Flask, request
from flask_sse import sse  # type: ignore[import-untyped,unused-ignore]
from publisher import WARM, Plan, run_gevent


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_REDIS_URL"] = os.environ["SSE_REDIS_URL"]
    app.register_blueprint(sse, url_prefix="/stream")

    def publish(data: str) -> object:
        return sse.publish(data)

    def publisher(plan: Plan) -> None:
        with app.app_context():
            run_gevent(publish, plan)

    @app.get("/bench/publish")
    def trigger() -> str:
        if request.args.get("kind") == "warm":
            sse.publish(WARM)
            return "warm\n"
        gevent.spawn(publisher, Plan.from_query(request.args))
        return "started\n"

    return app
