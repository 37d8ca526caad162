"""An app for the tests that load one worker: many channels, publishers in other threads.

It reads ``SSE_PUSH_BROKER_URL`` (``memory://`` for the in-process broker) and
``SSE_PUSH_REDIS_PREFIX`` from the environment. Besides the stream at ``/events``:

- ``/events?block=K&width=W`` streams the ``W`` channels ``bK-0`` ... ``bK-(W-1)``:
  the query is expanded before Flask reads it, so one request names hundreds of
  channels without a long request line;
- ``GET /stall`` returns the longest gap (``longest``, wall time, and
  ``longest_cpu``, the event loop thread's CPU time), in seconds, between the
  10 ms sleeps of a ticker greenlet (or thread) in this worker since the last
  ``/stall?reset=1``: how long the worker was kept from running anything else;
- ``POST /publish?channel=C&data=D`` publishes one event from the request;
- ``POST /publish-threads?mode=M&count=N&workers=W&channel=C`` publishes ``N``
  events ``M-0`` ... from other threads: ``executor`` (a
  :class:`concurrent.futures.ThreadPoolExecutor` of ``W`` threads), ``hub`` (gevent's
  thread pool, real OS threads), ``os`` (``W`` real OS threads, started with the
  unpatched ``_thread.start_new_thread``), ``greenlet`` (``W`` greenlets) or
  ``main`` (the request itself). It answers with the ids returned (``sent``,
  data -> id), the ``BrokerError`` messages (``refused``, data -> message) and
  any other exception (``wrong``, data -> ``repr``).
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import threading
import time
import typing as t

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from flask_sse_push import BrokerError, SSEPush

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Seconds the ticker sleeps between two looks at the clock.
TICK = 0.01


class _Ticker:
    """Records the longest time one of its short sleeps took beyond the sleep.

    ``longest`` is wall time; ``longest_cpu`` is the CPU time this OS thread
    (the event loop's) spent meanwhile, which is what the worker's own work
    costs, without the time a busy machine did not run the process at all.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self.longest_cpu = 0.0
        self.longest_gc = 0.0  # the longest garbage collection, CPU seconds
        self._gc_started = 0.0
        self.ticks = 0
        self.started = False
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            if self.started:
                return
            self.started = True
        gc.callbacks.append(self._gc)
        # Under gevent's worker, threading is patched: this is a greenlet.
        threading.Thread(target=self._run, daemon=True, name="stall-ticker").start()

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            self.longest_gc = max(self.longest_gc, time.thread_time() - self._gc_started)

    def _run(self) -> None:
        before, cpu_before = time.monotonic(), time.thread_time()
        while True:
            time.sleep(TICK)
            now, cpu = time.monotonic(), time.thread_time()
            self.longest = max(self.longest, now - before - TICK)
            self.longest_cpu = max(self.longest_cpu, cpu - cpu_before)
            self.ticks += 1
            before, cpu_before = now, cpu


def _expand_blocks(app: WSGIApplication) -> WSGIApplication:
    """Rewrite ``block=K&width=W`` into ``W`` ``channel=`` parameters."""

    def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        if "block=" in query:
            params = dict(part.partition("=")[::2] for part in query.split("&"))
            block, width = params.pop("block"), int(params.pop("width", "1"))
            rest = [f"{key}={value}" for key, value in params.items()]
            rest += [f"channel=b{block}-{i}" for i in range(width)]
            environ["QUERY_STRING"] = "&".join(rest)
        return app(environ, start_response)

    return middleware


def _run_threads(mode: str, jobs: list[Callable[[], None]], workers: int) -> None:
    """Run every job in the threads ``mode`` names, and wait for all of them."""
    if mode == "main":
        for job in jobs:
            job()
    elif mode == "executor":
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
    elif mode == "hub":
        import gevent

        threadpool = gevent.get_hub().threadpool
        for result in [threadpool.spawn(job) for job in jobs]:
            result.get()
    elif mode == "os":
        _run_os_threads(jobs, workers)
    elif mode == "greenlet":
        import gevent

        gevent.joinall([gevent.spawn(job) for job in jobs], raise_error=True)
    else:
        raise ValueError(f"unknown mode {mode!r}")


def _run_os_threads(jobs: list[Callable[[], None]], workers: int) -> None:
    """Real OS threads even when gevent patched ``threading``."""
    try:
        from gevent import monkey
    except ImportError:
        import _thread

        start, allocate = _thread.start_new_thread, _thread.allocate_lock
    else:
        start = monkey.get_original("_thread", "start_new_thread")
        allocate = monkey.get_original("_thread", "allocate_lock")
    queue = list(jobs)
    guard = allocate()
    finished = []

    def run() -> None:
        while True:
            with guard:
                if not queue:
                    finished.append(1)
                    return
                job = queue.pop()
            job()

    for _ in range(workers):
        start(run, ())
    deadline = time.monotonic() + 120
    while len(finished) < workers and time.monotonic() < deadline:
        time.sleep(0.01)  # a gevent sleep in a gevent worker: the hub keeps running


def create_app() -> Flask:
    """Build the app; ``SSE_PUSH_BROKER_URL`` must be set."""
    app = Flask(__name__)
    app.config.update(
        SSE_PUSH_BROKER_URL=os.environ["SSE_PUSH_BROKER_URL"],
        SSE_PUSH_REDIS_PREFIX=os.environ.get("SSE_PUSH_REDIS_PREFIX", "sse:"),
        SSE_PUSH_KEEPALIVE=1.0,
        SSE_PUSH_RETRY=100,
    )
    # Every load client comes from 127.0.0.1: no per-client limit.
    app.config["SSE_PUSH_MAX_STREAMS_PER_CLIENT"] = 1_000_000
    sse = SSEPush(app)
    ticker = _Ticker()

    @app.before_request
    def tick() -> None:
        ticker.start()

    @app.get("/stall")
    def stall() -> ResponseReturnValue:
        figures = {
            "longest": ticker.longest,
            "longest_cpu": ticker.longest_cpu,
            "longest_gc": ticker.longest_gc,
            "ticks": ticker.ticks,
        }
        if request.args.get("reset"):
            ticker.longest = ticker.longest_cpu = ticker.longest_gc = 0.0
        return jsonify(figures)

    @app.post("/publish")
    def publish() -> ResponseReturnValue:
        channel = request.args.get("channel", "default")
        return jsonify(id=sse.publish(request.args.get("data", "x"), channel=channel))

    @app.post("/publish-threads")
    def publish_threads() -> ResponseReturnValue:
        mode = request.args["mode"]
        count = int(request.args.get("count", "160"))
        workers = int(request.args.get("workers", "8"))
        channel = request.args.get("channel", "default")
        sent: dict[str, str] = {}
        refused: dict[str, str] = {}
        wrong: dict[str, str] = {}

        def job(data: str) -> Callable[[], None]:
            def run() -> None:
                try:
                    with app.app_context():
                        sent[data] = sse.publish(data, channel=channel)
                except BrokerError as exc:
                    refused[data] = str(exc)
                except Exception as exc:
                    wrong[data] = repr(exc)

            return run

        started = time.monotonic()
        _run_threads(mode, [job(f"{mode}-{i}") for i in range(count)], workers)
        return jsonify(sent=sent, refused=refused, wrong=wrong, seconds=time.monotonic() - started)

    app.wsgi_app = _expand_blocks(app.wsgi_app)  # type: ignore[method-assign, assignment]
    return app
