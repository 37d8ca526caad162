"""Two apps on one broker server, standing for two workers, and streams on
their test clients: for the control-plane unit tests."""

from __future__ import annotations

import threading
import typing as t

import fakeredis
from flask import Flask, request

from flask_sse_push import RedisBroker, SSEPush
from flask_sse_push.runtime import get_runtime
from tests.support.wire import Stream, parse


class Opened:
    """A stream on a test client, its bytes collected in the background."""

    def __init__(self, app: Flask, channel: str, user: str | None) -> None:
        headers = {} if user is None else {"X-User": user}
        self.response = app.test_client().get(
            f"/events?channel={channel}", headers=headers, buffered=False
        )
        self.body = b""
        self.done = threading.Event()
        chunks = iter(t.cast("t.Iterable[bytes]", self.response.response))
        self.body += next(chunks)  # the stream is open once its first chunk came
        self.thread = threading.Thread(target=self._read, args=(chunks,), daemon=True)
        self.thread.start()

    def _read(self, chunks: t.Iterator[bytes]) -> None:
        for chunk in chunks:
            self.body += chunk
        self.response.close()  # as the server does once the body ended
        self.done.set()

    def ended(self, timeout: float = 5.0) -> Stream:
        """Wait for the server to end the stream; return what the client learned."""
        assert self.done.wait(timeout), "the stream did not end"
        return parse(self.body)

    def still_open(self, within: float = 0.3) -> bool:
        return not self.done.wait(within)

    def close(self) -> None:
        self.response.close()


class Worker:
    """One app on its own broker object, as a gunicorn worker has."""

    def __init__(
        self, server: fakeredis.FakeServer, secret: str = "s3cret", **config: t.Any
    ) -> None:
        self.broker = RedisBroker(fakeredis.FakeRedis(server=server), prefix="t:")
        self.app = Flask(__name__)
        self.app.config.update(TESTING=True, SSE_PUSH_KEEPALIVE=0.05, SECRET_KEY=secret, **config)
        self.sse = SSEPush(self.app, broker=self.broker)

        @self.sse.identify
        def who() -> object:
            user = request.headers.get("X-User")
            return int(user) if user is not None and user.isdigit() else user

        get_runtime(self.app).control.start()

    def open(self, channel: str, user: str | None) -> Opened:
        return Opened(self.app, channel, user)

    def live(self) -> list[tuple[tuple[str, ...], object]]:
        with self.app.app_context():
            return sorted(((s.channels, s.identity) for s in self.sse.streams()), key=str)

    def close(self) -> None:
        control = get_runtime(self.app).control
        control.stop()
        if control.thread is not None:
            control.thread.join(5)  # it may be using the broker's connection
        self.broker.close()
