"""An app for the lifecycle tests that run it under gunicorn.

``LIFECYCLE_APP_CONFIG`` holds a JSON object of config keys. Besides the stream
at ``/events`` it has:

- ``POST /publish``: JSON ``{"channel", "data", "count"}``; publishes ``count``
  events (``data`` is sent as is) and returns their ids. With ``"events"``, a
  list of ``{"data", "event", "id"}`` objects, it publishes those instead;
- ``GET /stats``: the live streams of this worker, its broker subscribers, the
  TCP options set on the stream sockets, how many direct-write passes ran, the
  disconnects by reason, the stream capacity, and when the sources of
  ``/source`` were closed;
- ``GET /source?kind=sleep|queue``: an application stream (``sse.stream()``) whose
  source yields one event and then sleeps 60 s, or blocks on an empty queue;
  its ``finally`` records the time;
- an ``authorize`` hook refusing channels named ``private-*`` unless the
  ``X-User`` header is ``admin``, and an ``identify`` hook returning ``X-User``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import time
import typing as t

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from flask_sse_push import SSEPush
from flask_sse_push.runtime import get_runtime
from tests.apps.gzip_middleware import GzipPerChunk

#: The environment variable :func:`create_app` reads its config from.
CONFIG_VARIABLE = "LIFECYCLE_APP_CONFIG"

#: Set to ``1`` to wrap the app in :class:`tests.apps.gzip_middleware.GzipPerChunk`.
GZIP_VARIABLE = "LIFECYCLE_APP_GZIP"

#: Set to ``1`` to log the extension's INFO lines (stream opened/closed) to stderr.
LOG_VARIABLE = "LIFECYCLE_APP_LOG"

#: Socket options reported by ``/stats``, by name.
REPORTED_OPTIONS = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")


def environment(**config: object) -> dict[str, str]:
    """Return the environment that makes :func:`create_app` use ``config``."""
    return {CONFIG_VARIABLE: json.dumps(config)}


def create_app() -> Flask:
    if os.environ.get(LOG_VARIABLE) == "1":
        logger = logging.getLogger("flask_sse_push")
        logger.setLevel(logging.INFO)
        logger.addHandler(logging.StreamHandler())
    app = Flask(__name__)
    app.config.update(json.loads(os.environ.get(CONFIG_VARIABLE, "{}")))
    app.config.setdefault("SSE_PUSH_MAX_STREAMS_PER_CLIENT", 1_000_000)  # all from 127.0.0.1
    sse = SSEPush(app)

    @sse.authorize
    def only_admin_for_private(channel: str) -> bool:
        return not channel.startswith("private-") or request.headers.get("X-User") == "admin"

    @sse.identify
    def user() -> str | None:
        return request.headers.get("X-User")

    @app.post("/publish")
    def publish() -> ResponseReturnValue:
        body: dict[str, t.Any] = request.get_json(force=True)
        channel = body.get("channel", "default")
        if "events" in body:
            ids = [
                sse.publish(item["data"], item.get("event"), item.get("id"), channel=channel)
                for item in body["events"]
            ]
        else:
            ids = [sse.publish(body["data"], channel=channel) for _ in range(body.get("count", 1))]
        return jsonify(ids=ids)

    @app.get("/stats")
    def stats() -> ResponseReturnValue:
        runtime = get_runtime(app)
        live = runtime.registry.streams()
        options = []
        for stream in live:
            sock = stream.socket
            if sock is None:
                continue
            try:
                entry = {"SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
                for name in REPORTED_OPTIONS:
                    if hasattr(socket, name):
                        entry[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
            except OSError:  # the server closed it already (waitress, on the client's EOF)
                continue
            options.append(entry)
        return jsonify(
            pid=os.getpid(),
            live=len(live),
            subscribers=sse.broker.subscriber_count(),
            identities=[stream.info.identity for stream in live],
            sockopts=options,
            direct_passes=getattr(runtime.server, "passes", lambda: 0)(),
            disconnects=sse.stats()["disconnects"],
            parked=sse.stats()["clients_parked"],
            capacity=runtime.registry.max_connections,
            server=runtime.server.name,
            sources_closed=sources_closed,
        )

    sources_closed: list[float] = []

    @app.get("/source")
    def source() -> ResponseReturnValue:
        kind = request.args.get("kind", "sleep")

        def blocking() -> t.Iterator[str]:
            try:
                yield "started"
                if kind == "queue":
                    queue.Queue[str]().get()
                else:
                    time.sleep(60)
                yield "never"
            finally:
                sources_closed.append(time.time())

        return sse.stream(blocking())

    @app.post("/revoke")
    def revoke() -> ResponseReturnValue:
        body: dict[str, t.Any] = request.get_json(force=True)
        user = body.get("user")
        ended = sse.revoke(
            body["channel"],
            None if user is None else (lambda info: info.identity == user),
            reconnect=bool(body.get("reconnect")),
        )
        return jsonify(ended=ended)

    if os.environ.get(GZIP_VARIABLE) == "1":
        app.wsgi_app = GzipPerChunk(app.wsgi_app)  # type: ignore[method-assign]
    return app
