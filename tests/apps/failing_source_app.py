"""An app whose ``sse.stream()`` source needs the app context it does not have.

``/`` is a page whose ``EventSource`` listens to ``/orders/live`` and records
its ``readyState`` changes in ``window.states``. ``/orders/live`` streams a
generator that reads ``current_app`` (as a database query through
Flask-SQLAlchemy would), so it raises "Working outside of application context"
before its first event.
"""

from __future__ import annotations

import typing as t

from flask import Flask, current_app

from flask_sse_push import SSEPush

if t.TYPE_CHECKING:
    from collections.abc import Iterator

PAGE = """<!doctype html>
<title>orders</title>
<script>
window.states = [];
const source = new EventSource("/orders/live");
source.onopen = () => window.states.push("open");
source.onerror = () => window.states.push(source.readyState === 2 ? "closed" : "retrying");
</script>
"""


def create_app() -> Flask:
    app = Flask(__name__)
    sse = SSEPush(app)

    @app.get("/")
    def page() -> str:
        return PAGE

    @app.get("/orders/live")
    def orders_live() -> t.Any:
        def orders() -> Iterator[str]:
            yield str(current_app.config["DEBUG"])

        return sse.stream(orders())

    return app
