"""The limit: a bare gevent ``StreamServer`` writing pre-encoded bytes to every socket.

No framework, no per-client queue, no per-client encoding: each publish encodes
one chunk, appends it to a shared log and wakes every client, which writes all
it has not sent yet in one ``sendall``. Nothing in Python on one core should
fan out faster; it is the ceiling the other servers are measured against.

Usage: ``python limit_server.py PORT [KEEPALIVE_SECONDS]``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
import typing as t  # noqa: E402
from urllib.parse import parse_qsl, urlsplit  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.server import StreamServer  # noqa: E402
from publisher import WARM, Plan, run_gevent  # noqa: E402

if t.TYPE_CHECKING:
    import socket

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(block: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(block), block)


CONNECTED = chunk(b": connected\n\n")
KEEPALIVE = chunk(b": keepalive\n\n")


class Hub:
    """The shared log of encoded chunks, and the event that wakes the writers."""

    def __init__(self) -> None:
        self.log: list[bytes] = []
        self.wake = Event()
        self.clients = 0

    def publish(self, data: str) -> None:
        self.log.append(chunk(f"data: {data}\n\n".encode()))
        wake, self.wake = self.wake, Event()
        wake.set()


def serve(port: int, keepalive: float) -> None:
    hub = Hub()

    def stream(sock: socket.socket) -> None:
        sock.sendall(HEAD + CONNECTED)
        sent = len(hub.log)
        hub.clients += 1
        try:
            while True:
                log = hub.log
                if sent < len(log):
                    end = len(log)
                    sock.sendall(log[sent] if end - sent == 1 else b"".join(log[sent:end]))
                    sent = end
                elif not hub.wake.wait(keepalive):
                    sock.sendall(KEEPALIVE)
        finally:
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
