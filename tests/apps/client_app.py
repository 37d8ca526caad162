"""An app for the browser client's tests: a page that loads the client, and
endpoints to publish, revoke and read cursors.

Run under gunicorn as ``tests.apps.client_app:create_app()``.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue

from flask_sse_push import SSEPush

#: The page: the client's module, exposed to the tests as ``window.SSEPushClient``.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>client</title>
<script type="module">
import { SSEPushClient, EventStreamParser } from "/events/client.js";
window.SSEPushClient = SSEPushClient;
window.EventStreamParser = EventStreamParser;
window.clientReady = true;
</script>
"""


def create_app() -> Flask:
    app = Flask(__name__)
    # Fast reconnects and fast detection of streams whose tab went away.
    app.config["SSE_PUSH_RETRY"] = 300
    app.config["SSE_PUSH_KEEPALIVE"] = 0.5
    app.config.setdefault("SSE_PUSH_MAX_STREAMS_PER_CLIENT", 1_000_000)  # all from 127.0.0.1
    sse = SSEPush(app)

    @app.get("/")
    def page() -> Response:
        return Response(PAGE, content_type="text/html; charset=utf-8")

    @app.post("/publish")
    def publish() -> ResponseReturnValue:
        body = request.get_json()
        event_id = sse.publish(body["data"], event=body.get("event"), channel=body["channel"])
        return jsonify(id=event_id)

    @app.post("/revoke")
    def revoke() -> ResponseReturnValue:
        return jsonify(ended=sse.revoke(request.args["channel"]))

    @app.get("/cursor")
    def cursor() -> ResponseReturnValue:
        return jsonify(cursor=sse.cursor(*request.args.getlist("channel")))

    return app
