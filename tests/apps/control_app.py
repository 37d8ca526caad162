"""An app on a shared broker for the control-plane tests under real gunicorn.

Streams are identified by ``?user=`` (digits become an int, as a database id
would). ``POST /revoke?pid=P`` revokes only in worker ``P`` and answers ``409``
elsewhere, so a test can choose the worker a revoke starts from. Every answer
says which worker gave it in ``X-Worker-PID``. The broker URL and prefix come
from the environment.
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue

from flask_sse_push import SSEPush

#: Logs ``[what, performance.now(), readyState]`` into ``window.seen``.
PLAIN_PAGE = """<!doctype html><script>
window.seen = [];
const user = new URLSearchParams(location.search).get("user");
const source = new EventSource("/events?channel=room&user=" + user);
source.onopen = () => seen.push(["open", performance.now(), source.readyState]);
source.onerror = () => seen.push(["error", performance.now(), source.readyState]);
</script>"""


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="control-tests",
        SSE_PUSH_BROKER_URL=os.environ["SSE_PUSH_BROKER_URL"],
        SSE_PUSH_REDIS_PREFIX=os.environ.get("SSE_PUSH_REDIS_PREFIX", "sse:"),
        SSE_PUSH_KEEPALIVE=1.0,
        SSE_PUSH_PUBLISH_TOKEN=os.environ.get("SSE_PUSH_PUBLISH_TOKEN"),
        SSE_PUSH_PUBLISH_MAX_BYTES=int(os.environ.get("SSE_PUSH_PUBLISH_MAX_BYTES", "1048576")),
        SSE_PUSH_PRESENCE_TTL=float(os.environ.get("SSE_PUSH_PRESENCE_TTL", "15")),
    )
    sse = SSEPush(app)

    @sse.identify
    def who() -> object:
        user = request.args.get("user")
        return int(user) if user is not None and user.isdigit() else user

    @app.post("/revoke")
    def revoke() -> ResponseReturnValue:
        if request.args.get("pid", str(os.getpid())) != str(os.getpid()):
            return jsonify(error="another worker"), 409
        ended = sse.revoke(
            channel=request.args.get("channel"), identity=request.args.get("identity")
        )
        return jsonify(ended=ended)

    @app.get("/presence")
    def presence() -> ResponseReturnValue:
        """``[[identity, streams], ...]``: a list keeps int and str identities apart."""
        found = sse.presence(request.args.get("channel", "default"))
        return jsonify(sorted(([k, v] for k, v in found.items()), key=repr))

    @app.get("/stats")
    def stats() -> ResponseReturnValue:
        return jsonify(sse.stats(scope=request.args.get("scope", "worker")))

    @app.get("/plain")
    def plain_page() -> ResponseReturnValue:
        """A page with a plain ``EventSource`` that logs its state changes."""
        return PLAIN_PAGE

    @app.after_request
    def worker_pid(response: Response) -> Response:
        response.headers["X-Worker-PID"] = str(os.getpid())
        return response

    return app
