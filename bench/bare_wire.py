"""The bytes the bare gevent servers of the bench write (the limit, the parked floor).

An SSE response head with chunked framing, and the chunks they send before and
between events. No IO here, and no gevent import: each server decides whether to
monkey-patch before it imports anything else.
"""

from __future__ import annotations

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(block: bytes) -> bytes:
    """``block`` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(block), block)


CONNECTED = chunk(b": connected\n\n")
KEEPALIVE = chunk(b": keepalive\n\n")
