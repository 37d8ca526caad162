"""The browser client (``/events/client.js``) in headless Chromium, against
``gunicorn -k gevent``, when its connection dies silently: a TCP proxy between
them stops carrying the stream's bytes and closes nothing (no FIN, no RST), as
a dead NAT entry or a vanished peer does.

The server tells the client its keepalive interval in the stream's first
chunk; a stream that carries no byte for much longer is taken for dead, and
the client reconnects from its cursor, so nothing published meanwhile is lost.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
import typing as t
import uuid

import httpx
import pytest

from tests.support.browser_helpers import chromium
from tests.support.servers import Gunicorn, start_gunicorn, stop

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Seconds between the server's keepalives, as ``tests/client_app.py`` sets them:
#: the client allows two of them and its slack (2 s) before it gives a stream up.
KEEPALIVE = 0.5


class _Link:
    """One proxied connection: a client socket, its upstream, and whether it stalls."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        #: The request line of the last request the client sent on it.
        self.request = b""
        self.stalled = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class StallingProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream_port``, from threads.

    :meth:`stall_streams` makes every connection whose last request was for
    ``path`` stop carrying bytes, both ways, while both its sockets stay open;
    new connections are carried as usual.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def stall_streams(self, path: bytes) -> int:
        """Stall the connections now carrying a request for ``path``; return how many."""
        with self._lock:
            found = [link for link in self._links if link.request.startswith(b"GET " + path)]
        for link in found:
            link.stalled = True
        return len(found)

    def __enter__(self) -> StallingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        with self._lock:
            for link in self._links:
                link.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed: the proxy is done
                return
            upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
            for source, target, requests in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(link, source, target, requests), daemon=True
                ).start()

    @staticmethod
    def _pump(link: _Link, source: socket.socket, target: socket.socket, requests: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                return
            if requests and data[:4] in (b"GET ", b"POST"):
                link.request = data.split(b"\r\n", 1)[0]
            if link.stalled:
                continue  # read and dropped: neither side notices anything
            try:
                target.sendall(data)
            except OSError:
                return


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    running = start_gunicorn("tests.apps.client_app:create_app()")
    try:
        yield running
    finally:
        stop(running.process, signal.SIGQUIT)


def publish(server: Gunicorn, data: str, channel: str) -> str:
    body = {"data": data, "channel": channel}
    event_id: str = httpx.post(f"{server.url}/publish", json=body).json()["id"]
    return event_id


def messages(page: Page) -> list[str]:
    return [data for kind, data in page.evaluate("got") if kind == "message"]


def wait_for(condition: t.Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.mark.parametrize("shared", [True, False])
def test_a_silently_dead_connection_is_noticed_and_resumed(server: Gunicorn, shared: bool) -> None:
    """The stream stops carrying bytes, without FIN or RST, and events are
    published: within two keepalives and the slack the client gives up the
    connection (``error``), reconnects with its cursor and gets them all, once."""
    channel = f"c{uuid.uuid4().hex[:10]}"
    with StallingProxy(server.port) as proxy, chromium() as browser:
        page = browser.new_page()
        page.goto(proxy.url)
        page.wait_for_function("window.clientReady === true")
        page.evaluate(
            """([channel, shared]) => {
                window.got = [];
                window.client = new SSEPushClient("/events", {channels: [channel], shared});
                for (const type of ["message", "open", "error"]) {
                    client.on(type, (event) => got.push([event.type, event.data]));
                }
            }""",
            [channel, shared],
        )
        wait_for(lambda: page.evaluate("client.readyState") == 1, 10, "not open")
        publish(server, "before", channel)
        wait_for(lambda: messages(page) == ["before"], 5, "no event before the stall")
        assert proxy.stall_streams(f"/events?channel={channel}".encode()) == 1
        stalled = time.monotonic()
        published = ["before"]
        for n in range(4):
            publish(server, f"during {n}", channel)
            published.append(f"during {n}")
            time.sleep(0.5)
        wait_for(
            lambda: len(messages(page)) >= len(published),
            2 * KEEPALIVE + 2 + 10,
            f"the dead connection was never noticed: the page got {page.evaluate('got')}",
        )
        print(f"resumed {time.monotonic() - stalled:.1f} s after the stall")
        publish(server, "after", channel)
        published.append("after")
        wait_for(lambda: len(messages(page)) >= len(published), 5, "no event after the resume")
        time.sleep(0.3)  # time for a late duplicate
        assert messages(page) == published
        kinds = [kind for kind, _ in page.evaluate("got") if kind != "message"]
        assert kinds == ["open", "error", "open"]
        page.evaluate("client.close()")
