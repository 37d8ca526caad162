"""Many SSE connections from one thread: raw HTTP/1.1 sockets and a selector.

Tests that need hundreds of streams, a client that stops reading, or the exact
end of the chunked body use this instead of an HTTP library. Events are parsed
with httpx-sse's decoder, which is independent of the package under test.
"""

from __future__ import annotations

import codecs
import dataclasses
import selectors
import socket
import time
import typing as t

from httpx_sse._decoders import SSEDecoder, SSELineDecoder

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from tests.support.servers import Gunicorn


def split_response_head(buffer: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """Parse an HTTP/1.1 status line and headers from the start of ``buffer``.

    :returns: the status, the headers (names lower-cased) and the bytes after the
        blank line, or ``None`` while the head is still incomplete.
    """
    head, sep, rest = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


@dataclasses.dataclass(frozen=True)
class Received:
    """One dispatched block, with when it arrived (``time.time()``)."""

    id: str
    event: str
    data: str
    retry: int | None
    at: float


class RawStream:
    """One ``GET`` whose response is parsed incrementally as bytes arrive."""

    def __init__(
        self,
        port: int,
        path: str = "/events",
        headers: Mapping[str, str] | None = None,
        *,
        rcvbuf: int | None = None,
        http_version: str = "1.1",
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            # Before connect, so the advertised window stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        lines = [
            f"GET {path} HTTP/{http_version}",
            "Host: 127.0.0.1",
            "Accept: text/event-stream",
        ]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.sock.setblocking(False)
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        #: The zero-length chunk that ends a chunked body arrived.
        self.terminated = False
        #: The server closed the connection (or reset it).
        self.eof = False
        self.received: list[Received] = []
        #: Bytes read from the socket so far, head and framing included.
        self.wire_bytes = 0
        self._event_count = 0
        self._raw = b""
        self._chunked = False
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._lines = SSELineDecoder()
        self._decoder = SSEDecoder()

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def done(self) -> bool:
        return self.eof or self.terminated

    @property
    def events(self) -> list[Received]:
        """Blocks that carried data (keepalives and ``retry:``-only blocks left out)."""
        return [item for item in self.received if item.data]

    @property
    def event_count(self) -> int:
        """``len(self.events)``, without building the list."""
        return self._event_count

    def read(self, size: int = 65536) -> None:
        """Read what the socket has, up to ``size`` bytes; call when the selector
        says it is readable."""
        try:
            data = self.sock.recv(size)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        self.wire_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        self._raw += data
        if self.status is None:
            parsed = split_response_head(self._raw)
            if parsed is None:
                return
            self.status, head_fields, rest = parsed
            self.headers.update(head_fields)
            self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
            self._raw = rest
        if not self._chunked:
            payload, self._raw = self._raw, b""
            self._body(payload)
            return
        while not self.terminated:
            size_line, sep, rest = self._raw.partition(b"\r\n")
            if not sep:
                return
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self._raw = rest[size + 2 :]
            if size == 0:
                self.terminated = True
                return
            self._body(rest[:size])

    def _body(self, payload: bytes) -> None:
        self.body += payload
        if "content-encoding" in self.headers:
            return  # compressed: the test decodes the body itself
        now = time.time()
        text = self._text.decode(payload)
        if not text:
            return
        for line in self._lines.decode(text):
            sse = self._decoder.decode(line)
            if sse is not None:
                self.received.append(Received(sse.id, sse.event, sse.data, sse.retry, now))
                self._event_count += bool(sse.data)

    def close(self) -> None:
        self.sock.close()


def pump(
    streams: Iterable[RawStream],
    until: Callable[[], bool],
    timeout: float,
) -> bool:
    """Read every stream until ``until()`` or ``timeout`` seconds.

    :returns: whether ``until()`` became true.
    """
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            if not stream.eof:
                selector.register(stream.sock, selectors.EVENT_READ, stream)
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if not selector.get_map():
                return until()
            for key, _ in selector.select(min(left, 0.2)):
                stream = t.cast("RawStream", key.data)
                stream.read()
                if stream.eof:
                    selector.unregister(stream.sock)
    return True


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Poll ``condition``; return the seconds it took, or fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def opened(server: Gunicorn, path: str = "/events?channel=x", **kwargs: t.Any) -> RawStream:
    """A stream of ``server`` at ``path``, once its first bytes have arrived."""
    stream = RawStream(server.port, path, **kwargs)
    assert pump([stream], lambda: bool(stream.body), 10), "the stream did not open"
    return stream
