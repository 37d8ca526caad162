"""The floor of a parked design: an open stream is a socket in a table, nothing more.

A bare gevent ``StreamServer`` whose handler reads the request, writes the SSE
response head and ``: connected``, moves the socket's descriptor into one
per-process table and returns: no greenlet, frame, WSGI environ or request
object stays behind per client. One timer for every parked socket writes the
keepalives with non-blocking sends. It never publishes (idle scenario only):
it shows how little an idle stream can cost in Python on gevent, against which
a parked ``flask_sse_push`` stream (a cursor, a subscription, framing, the
access log's few fields on top) is measured.

Usage: ``python parked_floor.py PORT [KEEPALIVE_SECONDS]``.
"""

from __future__ import annotations

import _socket
import errno
import sys
import typing as t
from socket import IPPROTO_TCP, TCP_NODELAY

import gevent
from bare_wire import CONNECTED, HEAD, KEEPALIVE
from gevent.server import StreamServer

if t.TYPE_CHECKING:
    import socket

#: Errors of a non-blocking send that mean "the kernel's buffer is full, try later".
FULL = (errno.EAGAIN, errno.EWOULDBLOCK)


class Parked:
    """Every parked stream's socket, and the one timer that keeps them all alive.

    ``sockets`` maps a descriptor to the C-level socket (``_socket.socket``, some
    80 bytes) that owns it; ``owed`` holds, for the few whose last keepalive the
    kernel did not take whole, the bytes still to write.
    """

    def __init__(self, keepalive: float) -> None:
        self.keepalive = keepalive
        self.sockets: dict[int, _socket.socket] = {}
        self.owed: dict[int, bytes] = {}

    def park(self, sock: socket.socket) -> None:
        fd = sock.detach()
        raw = _socket.socket(fileno=fd)
        raw.setblocking(False)
        self.sockets[fd] = raw

    def tick(self) -> None:
        """Write one keepalive to every parked socket; drop those that hung up."""
        for fd, raw in list(self.sockets.items()):
            data = self.owed.pop(fd, b"") + KEEPALIVE
            try:
                sent = raw.send(data)
            except OSError as exc:
                if exc.errno in FULL:
                    self.owed[fd] = data
                    continue
                del self.sockets[fd]
                raw.close()
                continue
            if sent < len(data):
                self.owed[fd] = data[sent:]

    def run(self) -> None:
        while True:
            gevent.sleep(self.keepalive)
            self.tick()


def serve(port: int, keepalive: float) -> None:
    parked = Parked(keepalive)

    def handle(sock: socket.socket, address: object) -> None:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 16384:
            data = sock.recv(4096)
            if not data:
                return
            request += data
        sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
        try:
            sock.sendall(HEAD + CONNECTED)
        except OSError:
            return
        # The handler's greenlet ends here; the server's close() finds the
        # gevent socket detached and leaves the descriptor to the table.
        parked.park(sock)

    gevent.spawn(parked.run)
    server = StreamServer(("127.0.0.1", port), handle, backlog=4096)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 15.0)
