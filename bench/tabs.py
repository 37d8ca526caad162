"""Browser tabs on one page: server streams held, and publish-to-display latency.

Usage::

    python bench/tabs.py                # 1 and 8 tabs, shared and not shared
    python bench/tabs.py --events 200

Each run opens N tabs of the example page (which uses ``/events/client.js``) in
one Chromium profile, reads the server's own stream count from
``/events/health``, then publishes events 50 ms apart and records, in every
tab, the time from the publish request being sent to the handler running
(``Date.now()`` in the tab against the publisher's wall clock, same machine).
"Not shared" removes ``navigator.locks`` so each tab opens its own stream, as
an app without the client would; Chromium then holds at most six (HTTP/1.1
connections per host), and the other tabs receive nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import ROOT, Processes, free_port, pinned  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"]

RECORD = """() => {
    window.latencies = [];
    pushed.on("message", (event) => latencies.push(Date.now() - Number(event.data)));
}"""


def measure(url: str, browser: object, tabs: int, shared: bool, events: int) -> dict[str, object]:
    from playwright.sync_api import Browser
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    assert isinstance(browser, Browser)
    context = browser.new_context()
    if not shared:
        context.add_init_script("delete Navigator.prototype.locks;")
    try:
        pages = [context.new_page() for _ in range(tabs)]
        loaded = []
        for page in pages:
            # Beyond six streams a tab cannot even load its page.
            try:
                page.goto(url, wait_until="commit", timeout=5000)
            except PlaywrightTimeout:
                continue
            loaded.append(page)
        time.sleep(3)
        script = "typeof window.pushed?.on === 'function' && pushed.readyState === 1"
        ready = [page for page in loaded if page.evaluate(script)]
        for page in ready:
            page.evaluate(RECORD)
        streams = httpx.get(f"{url}/events/health").json()["clients_connected"]
        for _ in range(events):
            httpx.post(f"{url}/api/publish", json={"data": f"{time.time() * 1000:.1f}"})
            time.sleep(0.05)
        time.sleep(1)
        latencies: list[float] = []
        receiving = 0
        for page in ready:
            got = page.evaluate("latencies")
            receiving += len(got) == events
            latencies.extend(got)
        latencies.sort()
        return {
            "tabs": tabs,
            "shared": shared,
            "streams": streams,
            "receiving": receiving,
            "p50": statistics.median(latencies) if latencies else None,
            "p95": latencies[int(len(latencies) * 0.95) - 1] if latencies else None,
            "max": latencies[-1] if latencies else None,
        }
    finally:
        context.close()


def idle(url: str, timeout: float = 60.0) -> None:
    """Wait until the server has noticed that earlier tabs closed (next keepalive)."""
    deadline = time.monotonic() + timeout
    while httpx.get(f"{url}/events/health").json()["clients_connected"]:
        if time.monotonic() > deadline:
            raise RuntimeError("streams of closed tabs are still open")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1"]
    command += ["--no-control-socket", "-b", f"127.0.0.1:{port}", "example_app:create_app()"]
    with Processes() as procs:
        server = procs.start("example", pinned("0", command), cwd=ROOT, env=dict(os.environ))
        server.wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        rows = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for tabs, shared in ((1, True), (8, True), (8, False)):
                    idle(url)
                    rows.append(measure(url, browser, tabs, shared, args.events))
                    print(rows[-1], file=sys.stderr)
            finally:
                browser.close()
    print("| tabs | sharing | server streams | tabs receiving | p50 ms | p95 ms | max ms |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for row in rows:
        cells = [row["tabs"], "yes" if row["shared"] else "no (no Web Locks)", row["streams"]]
        cells += [f"{row['receiving']}/{row['tabs']}"]
        cells += ["-" if row[key] is None else f"{row[key]:.0f}" for key in ("p50", "p95", "max")]
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


if __name__ == "__main__":
    main()
