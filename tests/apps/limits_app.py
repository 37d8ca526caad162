"""An app behind one proxy, as docs/deploying.md sets it up: ``ProxyFix(x_for=1)``.

Tests that serve it with gunicorn tell clients apart on 127.0.0.1 by the
``X-Forwarded-For`` header they send, as a proxy would.
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_sse_push import SSEPush


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(SSE_PUSH_KEEPALIVE=1.0)
    SSEPush(app)
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    return app
