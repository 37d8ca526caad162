"""The Node ``eventsource`` client (``tests/node/listen.js``) in a subprocess,
its records read as JSON lines. Needs ``node`` and ``npm ci --prefix tests/node``."""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import subprocess
import threading
import time
import typing as t

from tests.support.servers import ROOT, missing

if t.TYPE_CHECKING:
    from collections.abc import Iterator

NODE_DIR = ROOT / "tests" / "node"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        missing("node (Node.js 18 or later)")
    if not (NODE_DIR / "node_modules" / "eventsource").is_dir():
        missing("the Node eventsource package (run: npm ci --prefix tests/node)")
    return node


class NodeClient:
    """``tests/node/listen.js`` in a subprocess, its JSON lines read in the background."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[dict[str, t.Any] | None] = queue.Queue()
        self.seen: list[dict[str, t.Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, kind: str, timeout: float = 10.0) -> dict[str, t.Any]:
        """Return the next record of ``kind``, failing on the client's exit or a timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                record = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if record is None:
                raise AssertionError(f"the client exited; it saw {self.seen}")
            self.seen.append(record)
            if record["kind"] == kind:
                return record
        raise AssertionError(f"no {kind} within {timeout} s; the client saw {self.seen}")


@contextlib.contextmanager
def node_client(url: str, count: int, last_event_id: str | None = None) -> Iterator[NodeClient]:
    args = [_node(), "listen.js", url, str(count)]
    if last_event_id is not None:
        args.append(last_event_id)
    process = subprocess.Popen(args, cwd=NODE_DIR, stdout=subprocess.PIPE, text=True)
    client = NodeClient(process)
    try:
        yield client
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        client.reader.join(10)
        assert process.stdout is not None
        process.stdout.close()
