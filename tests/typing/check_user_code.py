"""Code written the way users write it; `mypy --strict` must accept it as is.

Not collected by pytest: it is only type-checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Flask, Response

from flask_sse_push import (
    Broker,
    BrokerError,
    MemoryBroker,
    ServerSentEvent,
    SSEPush,
    Subscription,
    SubscriptionClosed,
    last_event_id,
)

sse = SSEPush()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_PUSH_KEEPALIVE"] = 10.0
    sse.init_app(app)

    @app.post("/orders")
    def create_order() -> tuple[str, int]:
        event_id: str = sse.publish({"order": 42}, event="created", channel="orders")
        return event_id, 201

    @app.get("/clock")
    def clock() -> Response:
        def ticks() -> Iterator[ServerSentEvent]:
            for n in range(3):
                yield ServerSentEvent(time.ctime(), event="tick", id=str(n))

        return sse.stream(ticks())

    @app.get("/resumable")
    def resumable() -> Response:
        cursor: str | None = last_event_id()
        start = 0 if cursor is None else int(cursor) + 1
        return sse.stream(ServerSentEvent(str(n), id=str(n)) for n in range(start, 10))

    @app.get("/mixed")
    def mixed() -> Response:
        def items() -> Iterator[str | dict[str, object]]:
            yield "plain"
            yield {"data": [1, 2], "event": "list"}

        return sse.stream(items())

    return app


def read_directly(broker: Broker) -> list[str]:
    subscription: Subscription
    with broker.subscribe(["orders"], last_event_id=broker.cursor(["orders"])) as subscription:
        try:
            return [event.data for event in subscription.get(timeout=1.0)]
        except SubscriptionClosed as closed:
            return [closed.reason]


def publish_safely(broker: Broker) -> str | None:
    try:
        return broker.publish("orders", ServerSentEvent("x"))
    except BrokerError:
        return None


wire: bytes = ServerSentEvent("hi", event="greeting", id="1", retry=500).encode()
app_with_broker = SSEPush(Flask("x"), broker=MemoryBroker(history=10, queue_size=10))
