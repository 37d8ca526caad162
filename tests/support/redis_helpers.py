"""Shared pieces of the Redis tests: inspecting clients, waits, and a raw-socket SSE client.

The fixtures built on them (``redis_server``, ``inspector``) live in
``tests/integration/conftest.py``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import selectors
import socket
import threading
import time
import typing as t

import pytest
import redis

from flask_sse_push import ServerSentEvent
from tests.support.raw_client import split_response_head
from tests.support.servers import RedisServer

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from flask_sse_push import Broker, Subscription


#: A client whose replies are ``str``. The types-redis stubs make ``Redis``
#: generic and redis-py's own hints do not; the ignore serves both.
Inspector: t.TypeAlias = "redis.Redis[str]"  # type: ignore[type-arg, unused-ignore]


def redis_client(server: RedisServer) -> Inspector:
    """A plain client for inspecting the server; the caller closes it."""
    return redis.Redis.from_url(server.url, decode_responses=True)


def sse_clients(client: Inspector) -> list[dict[str, t.Any]]:
    """The ``CLIENT LIST`` entries of everything but ``client`` itself."""
    me = client.client_id()
    return [c for c in client.client_list() if int(c["id"]) != me]


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it is true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.02)


def take(sub: Subscription, count: int, timeout: float = 10.0) -> list[ServerSentEvent]:
    """Read from ``sub`` until ``count`` events came, or fail after ``timeout``."""
    events: list[ServerSentEvent] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"got {len(events)} of {count} events: {events}")
        events += sub.get(0.05)
    return events


def reconnecting_clients(
    broker: Broker,
    channels: list[str],
    publish: Callable[[int], object],
    count: int,
    *,
    clients: int = 3,
    timeout: float = 60.0,
) -> list[list[str]]:
    """Publish ``count`` events (``publish(n)`` for each ``n``) while ``clients``
    threads read ``channels``, each reconnecting at random with its last cursor.

    The handover under load: returns the data each client got, in the order it
    got them, to check for losses, repeats and order. A client stops when it has
    ``count`` events or after ``timeout`` seconds.
    """
    start = broker.cursor(channels)

    def publisher() -> None:
        for n in range(count):
            publish(n)

    def client(seen: list[str], seed: int) -> None:
        rng = random.Random(seed)
        cursor = start
        deadline = time.monotonic() + timeout
        while len(seen) < count and time.monotonic() < deadline:
            with broker.subscribe(channels, last_event_id=cursor) as sub:
                for _ in range(rng.randint(1, 6)):
                    for event in sub.get(0.05):
                        assert event.id is not None
                        seen.append(event.data)
                        cursor = event.id

    views: list[list[str]] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=client, args=(v, n)) for n, v in enumerate(views)]
    threads.append(threading.Thread(target=publisher))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 10.0)
    return views


def stream_ids(client: Inspector, prefix: str, channel: str) -> list[str]:
    """The entry ids of a channel's stream: what a client must have seen."""
    return [str(entry_id) for entry_id, _ in client.xrange(f"{prefix}stream:{channel}") or ()]


# -- a raw-socket EventSource, light enough for hundreds at once -------------------


@dataclasses.dataclass
class Event:
    data: str
    event: str = "message"
    id: str | None = None


class SSEClient:
    """One ``GET`` over HTTP/1.0 (so the body is raw bytes until close), parsed as it comes.

    It keeps the last event id like a browser does, and :meth:`reconnect` sends it
    back as ``Last-Event-ID``.
    """

    def __init__(self, port: int, path: str = "/events", *, last_event_id: str | None = None):
        self.port = port
        self.path = path
        self.last_event_id = last_event_id
        self.events: list[Event] = []
        self.connections = 0
        self.sock: socket.socket | None = None
        self.connect()

    def connect(self) -> None:
        self.close()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.ended = False
        self._buffer = b""
        self._fields: dict[str, str] = {}
        self._data: list[str] = []
        self.connections += 1
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        lines = [f"GET {self.path} HTTP/1.0", "Host: 127.0.0.1", "Accept: text/event-stream"]
        if self.last_event_id:
            lines.append(f"Last-Event-ID: {self.last_event_id}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sock.setblocking(False)
        self.sock = sock

    reconnect = connect

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def feed(self) -> None:
        """Read what the socket has; set :attr:`ended` at the end of the stream."""
        assert self.sock is not None
        try:
            chunk = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.ended = True
            return
        if self.status is None:
            self._buffer += chunk
            parsed = split_response_head(self._buffer)
            if parsed is None:
                return
            self.status, head_fields, chunk = parsed
            self.headers.update(head_fields)
            self._buffer = b""
        self.body += chunk
        self._buffer += chunk
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()
        for raw in lines:
            self._line(raw.decode())

    def _line(self, line: str) -> None:
        if not line:
            if self._data:
                event = Event("\n".join(self._data), self._fields.get("event", "message"))
                event.id = self.last_event_id
                self.events.append(event)
            self._fields, self._data = {}, []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self.last_event_id = value
        else:
            self._fields[name] = value

    def ids(self, event: str = "message") -> list[str | None]:
        return [e.id for e in self.events if e.event == event]

    @property
    def worker(self) -> str | None:
        return self.headers.get("x-worker-pid")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def pump(
    clients: Iterable[SSEClient],
    until: Callable[[], bool],
    timeout: float = 15.0,
    what: str = "",
    on_end: Callable[[SSEClient], object] | None = None,
) -> None:
    """Read every open client until ``until()`` is true, or fail after ``timeout``.

    ``on_end`` runs when a client's stream ends, and may reconnect it.
    """
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for client in clients:
            if client.sock is not None:
                selector.register(client.sock, selectors.EVENT_READ, client)
        while not until():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what or until}")
            for key, _ in selector.select(0.05):
                client = key.data
                assert isinstance(client, SSEClient)
                client.feed()
                if client.ended:
                    selector.unregister(key.fileobj)
                    client.close()
                    if on_end is not None:
                        on_end(client)
                        if client.sock is not None:
                            selector.register(client.sock, selectors.EVENT_READ, client)


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))
