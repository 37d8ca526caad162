"""An app with users, for the browser client's session tests under real gunicorn.

``GET /login/<name>`` puts ``name`` in Flask's (cookie) session and
``GET /logout`` clears it (with ``?revoke=1`` it first revokes the user's
streams everywhere, as docs/users.md advises). ``identify`` returns the
session's user (``None`` when logged out); channel ``user.<name>`` is for
``name`` only, every other channel for anyone. The broker URL and prefix come
from the environment. ``GET /`` is a page that loads the client,
``GET /blank`` a page of the same origin that does not.
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify, request, session
from flask.typing import ResponseReturnValue

from flask_sse_push import SSEPush

#: The client's module, exposed to the tests as ``window.SSEPushClient``.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>session</title>
<script type="module">
import { SSEPushClient } from "/events/client.js";
window.SSEPushClient = SSEPushClient;
window.clientReady = true;
</script>
"""

BLANK = "<!doctype html><title>blank</title>"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="session-tests",
        SSE_PUSH_BROKER_URL=os.environ["SSE_PUSH_BROKER_URL"],
        SSE_PUSH_REDIS_PREFIX=os.environ.get("SSE_PUSH_REDIS_PREFIX", "sse:"),
        SSE_PUSH_RETRY=300,
        SSE_PUSH_KEEPALIVE=0.5,
        SSE_PUSH_MAX_STREAMS_PER_CLIENT=1_000_000,  # every tab comes from 127.0.0.1
    )
    sse = SSEPush(app)

    @sse.identify
    def who() -> object:
        return session.get("user")

    @sse.authorize
    def may_read(channel: str) -> bool:
        if channel.startswith("user."):
            return bool(channel == f"user.{session.get('user')}")
        return True

    @app.get("/")
    def page() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8")

    @app.get("/blank")
    def blank() -> Response:
        return Response(BLANK, content_type="text/html; charset=utf-8")

    @app.get("/login/<name>")
    def login(name: str) -> ResponseReturnValue:
        session["user"] = name
        return jsonify(user=name)

    @app.get("/logout")
    def logout() -> ResponseReturnValue:
        user = session.pop("user", None)
        ended = 0
        if user is not None and request.args.get("revoke"):
            ended = sse.revoke(identity=user)
        return jsonify(user=user, ended=ended)

    @app.post("/publish")
    def publish() -> ResponseReturnValue:
        body = request.get_json()
        return jsonify(id=sse.publish(body["data"], channel=body["channel"]))

    return app
