"""The limit: a bare gevent ``StreamServer`` writing pre-encoded bytes to every socket.

No framework, no per-client queue, no per-client encoding, no per-client wake-up:
each publish appends one encoded event to a shared log, and one pass after the
publisher yields writes every client's missing events as one chunk, framed once,
with one non-blocking ``send`` per socket (see :class:`Hub`). Nothing in Python
on one core should fan out faster; it is the ceiling the other servers are
measured against.

Usage: ``python limit_server.py PORT [KEEPALIVE_SECONDS]``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
import typing as t  # noqa: E402
from socket import IPPROTO_TCP, TCP_NODELAY  # noqa: E402
from urllib.parse import parse_qsl, urlsplit  # noqa: E402

import gevent  # noqa: E402
from bare_wire import CONNECTED, HEAD, KEEPALIVE, chunk  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.server import StreamServer  # noqa: E402
from publisher import WARM, Plan, run_gevent  # noqa: E402

if t.TYPE_CHECKING:
    import socket


class Client:
    """One stream: where it is in the log, and what its greenlet must finish."""

    __slots__ = ("sock", "raw", "sent", "rest", "wake")

    def __init__(self, sock: socket.socket, sent: int) -> None:
        self.sock = sock
        self.raw = sock._sock  # type: ignore[attr-defined]  # gevent's underlying socket
        self.sent = sent
        self.rest = b""
        self.wake = Event()


class Hub:
    """The shared log of encoded events, written to every idle client in one pass.

    A publish appends to the log and schedules one flush, which runs once the
    publisher yields: it frames what each client has not had yet (once per
    distinct position, so usually once) and writes it with one non-blocking
    send per socket, from one loop, with no greenlet switch per client. Only a
    client whose socket takes less than the whole chunk is handed to its own
    greenlet, which finishes the chunk with a blocking write and catches up.
    """

    def __init__(self) -> None:
        self.log: list[bytes] = []
        self.idle: dict[Client, None] = {}
        self.scheduled = False
        self.clients = 0

    def publish(self, data: str) -> None:
        self.log.append(f"data: {data}\n\n".encode())
        if not self.scheduled:
            self.scheduled = True
            gevent.spawn_raw(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        end = len(self.log)
        framed: dict[int, bytes] = {}
        for client in list(self.idle):
            start = client.sent
            if start >= end:
                continue
            data = framed.get(start)
            if data is None:
                data = framed[start] = chunk(b"".join(self.log[start:end]))
            try:
                sent = client.raw.send(data)
            except OSError:
                sent = 0
            client.sent = end
            if sent < len(data):
                client.rest = data[sent:]
                del self.idle[client]
                client.wake.set()

    def catch_up(self, client: Client) -> None:
        """Write, blocking, what ``client`` is owed; it is not in ``idle`` meanwhile."""
        if client.rest:
            rest, client.rest = client.rest, b""
            client.sock.sendall(rest)
        while client.sent < len(self.log):
            end = len(self.log)
            client.sock.sendall(chunk(b"".join(self.log[client.sent : end])))
            client.sent = end


def serve(port: int, keepalive: float) -> None:
    hub = Hub()

    def stream(sock: socket.socket) -> None:
        # As every server here does (gunicorn, uvicorn): an event must leave at
        # once, not wait for the previous one's ACK.
        sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
        sock.sendall(HEAD + CONNECTED)
        client = Client(sock, len(hub.log))
        hub.clients += 1
        try:
            while True:
                hub.catch_up(client)
                client.wake.clear()
                hub.idle[client] = None
                woken = client.wake.wait(keepalive)
                if not woken:
                    hub.idle.pop(client, None)
                    hub.catch_up(client)
                    sock.sendall(KEEPALIVE)
        finally:
            hub.idle.pop(client, None)
            hub.clients -= 1

    def handle(sock: socket.socket, address: object) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 16384:
            data = sock.recv(4096)
            if not data:
                return
            request += data
        target = request.split(b" ", 2)[1].decode("latin-1")
        url = urlsplit(target)
        if url.path != "/bench/publish":
            try:
                stream(sock)
            except OSError:
                pass
            return
        args = dict(parse_qsl(url.query))
        if args.get("kind") == "warm":
            hub.publish(WARM)
        else:
            gevent.spawn(run_gevent, hub.publish, Plan.from_query(args))
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    server = StreamServer(("127.0.0.1", port), handle, backlog=4096)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 15.0)
