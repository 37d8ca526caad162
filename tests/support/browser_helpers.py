"""Headless Chromium from the system, driven by Playwright, and a second origin.

Playwright's own browser builds are never downloaded: the tests drive Debian's
``/usr/bin/chromium``, and skip (or fail, under ``SSE_PUSH_TESTS_STRICT=1``)
when it or the ``playwright`` package is missing.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import threading
import typing as t

from tests.support.servers import missing

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"

#: Quiet, sandbox-free headless flags: no first-run UI, no background fetches,
#: no QUIC (the servers speak TCP only).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Launch the system Chromium for the ``with`` block."""
    if not os.access(CHROMIUM, os.X_OK):
        missing("chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright (pip install playwright; no browser download needed)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


class StaticPage:
    """Serves one HTML page at every path of ``127.0.0.1:<port>``, from a thread.

    Its origin differs from the app server's by the port, which is all CORS
    needs to treat it as another site.
    """

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: t.Any) -> None:
                pass  # keep test output clean

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StaticPage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


_RANDOM = "[a-z0-9]{5}"
_TIMESTAMP = '"timestamp": "[^"]+"'


def countdown_patterns() -> list[re.Pattern[str]]:
    """What each list item must read, in order: ``[lastEventId] type: data``."""
    patterns = [
        rf'\[1\] \{{"id": 1, "message": "Hello, world!", {_TIMESTAMP}\}}',
        rf"\[{_RANDOM}0\] update: bye-bye",
        r"\[100\] hi: hi",
    ]
    for n in range(1, 6):
        # The message's own id field repeats its event id.
        message = f"hi,这是第 {n} 条消息。"
        patterns.append(
            rf'\[({_RANDOM}{n})\] \{{"id": "\1", "message": "{message}", {_TIMESTAMP}\}}'
        )
    patterns.append(r"\[9999\] end: 结束通信。")
    return [re.compile(pattern) for pattern in patterns]


def assert_full_countdown(items: list[str]) -> None:
    patterns = countdown_patterns()
    assert len(items) == len(patterns), items
    for item, pattern in zip(items, patterns, strict=True):
        assert pattern.fullmatch(item), f"{item!r} does not match {pattern.pattern!r}"
