"""Measure how long gunicorn holds a stream whose peer vanished without a FIN.

Run by test_lifecycle_gunicorn.py as ``unshare --net python -m tests.support.netns_probe``:
in a private network namespace nothing else is affected when the loopback goes
down. Then packets are neither delivered nor answered, exactly as when a phone
loses its signal. The stream's end is seen in gunicorn's access log, which is
written when the request finishes. Prints one JSON line; exits 2 when the
namespace cannot be set up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx

from tests.support.raw_client import RawStream, pump
from tests.support.servers import start_gunicorn, stop


def main() -> int:
    try:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"cannot bring up the namespace's loopback: {exc}", file=sys.stderr)
        return 2
    server = start_gunicorn("tests.apps.lifecycle_app:create_app()")
    stream: RawStream | None = None
    try:
        stream = RawStream(server.port, "/events?channel=gone")
        opened = stream
        if not pump([stream], lambda: bool(opened.body), 10):
            raise RuntimeError("the stream did not open")
        stats = httpx.get(f"{server.url}/stats", timeout=10).json()
        if stats["live"] != 1:
            raise RuntimeError(f"expected one live stream, got {stats}")
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        down = time.monotonic()
        while "GET /events?channel=gone" not in server.output():
            if time.monotonic() - down > 60:
                raise RuntimeError("the stream was never released")
            time.sleep(0.02)
        released_after = time.monotonic() - down
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        disconnects = httpx.get(f"{server.url}/stats", timeout=10).json()["disconnects"]
    finally:
        if stream is not None:
            stream.close()
        stop(server.process)
    log = server.output()
    report = {
        "released_after": released_after,
        "sockopts": stats["sockopts"][0],
        "disconnects": disconnects,
        "log": log,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
