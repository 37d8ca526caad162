"""Benchmark flask_sse_push against its peers and the limit, side by side.

Usage::

    pip install -r bench/requirements.txt
    python bench/run.py                       # everything, full size, 3 runs each
    python bench/run.py --scenario broadcast --contender flask_sse_push --runs 5
    python bench/run.py --smoke               # ~10 s check that it all still works
    python bench/run.py --profile             # py-spy profile of the broadcast
    python bench/run.py --profile --scenario broadcast_each

Every server runs on CPU 0 (``taskset -c 0``), the load generator on CPU 1.
A full run (no filters) writes the tables to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402
from contenders import CONTENDERS, Contender, Server  # noqa: E402
from procs import (  # noqa: E402
    BENCH,
    LOAD_CPU,
    Processes,
    pinned,
    raise_nofile,
    redis_cluster,
    redis_server,
)
from scenarios import ALL, SCENARIOS, Scenario  # noqa: E402

if t.TYPE_CHECKING:
    from collections.abc import Callable

RESULTS = BENCH / "RESULTS.md"
PROFILE = BENCH / "PROFILE.md"


class Run(t.NamedTuple):
    ok: bool
    data: dict[str, t.Any]


class Outcome(t.NamedTuple):
    """Every run of one contender in one scenario, or why it did not run."""

    runs: list[Run]
    unavailable: str | None = None


class Bench:
    def __init__(self, procs: Processes, *, smoke: bool, verbose: bool, nofile: int) -> None:
        self.procs = procs
        self.nofile = nofile
        self.smoke = smoke
        self.verbose = verbose
        self._sources = 0

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def _src_base(self) -> int:
        # A fresh set of 127.0.0.x client addresses for every load generator.
        self._sources += 1
        return 2 + (self._sources * 3) % 240

    def loadgen_config(
        self, scenario: Scenario, contender: Contender, server: Server
    ) -> dict[str, t.Any]:
        size = scenario.size(self.smoke)
        keepalive = scenario.smoke_keepalive if self.smoke else scenario.keepalive
        config: dict[str, t.Any] = {
            "mode": scenario.mode,
            "port": server.port,
            "path": server.path,
            "keepalive_marker": server.keepalive_marker,
            "src_base": self._src_base(),
            "keepalive": keepalive,
            "warm_path": "/bench/publish?kind=warm",
            "server_pids": server.workers,
            **size,
        }
        if scenario.mode in ("broadcast", "latency"):
            rate = size.get("rate", 0)
            config["run_path"] = (
                f"/bench/publish?kind=run&duration={size['duration']}&rate={rate}"
                f"&pad={size['pad']}&burst={size.get('burst', 1)}"
            )
            config["timestamps"] = scenario.mode == "latency"
            config["sample_every"] = size.get("sample_every", 1)
            config["drain"] = 10 if self.smoke else 30
        elif scenario.mode == "idle":
            config["rss_pids"] = server.workers
            config["steps"], config["unreachable"] = idle_steps(size["steps"], self.nofile)
        elif scenario.mode == "storm" and contender.silent_until_event:
            # This server sends nothing, not even headers, before the first event;
            # a slow ticker makes it open, the way a live site would.
            config["ticker_path"] = (
                f"/bench/publish?kind=run&duration={size['timeout']}&rate=10&pad=8"
            )
        return config

    def run_loadgen(
        self, config: dict[str, t.Any], timeout: float, on_phase: Callable[[str], None]
    ) -> dict[str, t.Any]:
        command = pinned(LOAD_CPU, [sys.executable, "loadgen.py", json.dumps(config)])
        proc = self.procs.start("loadgen", command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out: list[bytes] = []
        err: list[str] = []

        def read_out() -> None:
            assert proc.process.stdout is not None
            out.append(proc.process.stdout.read())

        def read_err() -> None:
            assert proc.process.stderr is not None
            for raw in proc.process.stderr:
                line = raw.decode(errors="replace").rstrip()
                if line.startswith("phase "):
                    on_phase(line[6:])
                else:
                    err.append(line)

        readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
        for reader in readers:
            reader.start()
        try:
            proc.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"load generator still running after {timeout:.0f} s") from None
        finally:
            for reader in readers:
                reader.join(5)
            self.procs.stop(proc)
        if proc.process.returncode != 0 or not out or not out[0].strip():
            tail = "\n".join(err[-15:])
            raise RuntimeError(f"load generator failed ({proc.process.returncode}):\n{tail}")
        result: dict[str, t.Any] = json.loads(out[0])
        return result

    def run_once(
        self, scenario: Scenario, contender: Contender, profile: Path | None = None
    ) -> Run:
        keepalive = scenario.smoke_keepalive if self.smoke else scenario.keepalive
        with contextlib.ExitStack() as stack:
            redis_url = None
            cluster: list[int] = []
            if contender.needs_cluster:
                cluster = stack.enter_context(redis_cluster(self.procs))
                redis_url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster)
            elif contender.needs_redis:
                redis_url = stack.enter_context(redis_server(self.procs))
            server = contender.start(
                self.procs, workers=scenario.workers, keepalive=keepalive, redis_url=redis_url
            )
            stack.callback(self.procs.stop_all)
            config = self.loadgen_config(scenario, contender, server)
            counter: RedisCounter | None = None
            if cluster:
                counter = RedisCounter(*[f"redis://127.0.0.1:{p}/0" for p in cluster])
            elif scenario.count_redis and redis_url:
                counter = RedisCounter(redis_url)
            profiler: list[subprocess.Popen[bytes]] = []

            def on_phase(name: str) -> None:
                if name != "run":
                    return
                if counter is not None:
                    counter.start()
                if profile is not None:
                    profiler.append(start_profiler(server.workers[0], config, profile))

            budget = 900.0 if scenario.mode == "idle" else 300.0
            try:
                data = self.run_loadgen(config, budget, on_phase)
            finally:
                for spy in profiler:
                    try:
                        spy.wait(float(config.get("duration", 5)) + 30)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        spy.wait()
                if counter is not None:
                    counter.stop()
            if counter is not None:
                data["redis_conns"] = counter.peak
                if cluster:
                    data["shard_commands"] = counter.commands
        return Run(bool(data.get("ok")), data)

    def measure(
        self, scenario: Scenario, contenders: list[Contender], runs: int
    ) -> dict[str, Outcome]:
        """Run every contender ``runs`` times, taking turns (run 1 of each, then run 2...).

        Taking turns spreads the machine's slow spells over every row, so the
        ratios between rows of one run hold even when absolute figures drift.
        """
        ready: list[Contender] = []
        outcomes: dict[str, Outcome] = {}
        for contender in contenders:
            reason = contender.unavailable()
            if reason is None:
                ready.append(contender)
                outcomes[contender.name] = Outcome([])
            else:
                self.log(f"  {contender.name}: {reason}")
                outcomes[contender.name] = Outcome([], reason)
        for index in range(runs):
            for contender in ready:
                began = time.monotonic()
                try:
                    run = self.run_once(scenario, contender)
                except RuntimeError as exc:
                    run = Run(False, {"why": str(exc).splitlines()[0]})
                    if self.verbose:
                        self.log(str(exc))
                outcomes[contender.name].runs.append(run)
                self.log(
                    f"  {contender.name} run {index + 1}/{runs}"
                    f" ({time.monotonic() - began:.1f} s): {report.brief(scenario, run)}"
                )
        return outcomes


def idle_steps(wanted: list[int], nofile: int) -> tuple[list[int], list[int]]:
    """Split idle steps into those one process's open-file limit allows, and the rest.

    When a step does not fit, the largest count that does is measured instead.
    """
    cap = (nofile - 512) // 1000 * 1000
    fits = [step for step in wanted if step <= cap]
    unreachable = [step for step in wanted if step > cap]
    if unreachable and cap > max(fits, default=0):
        fits.append(cap)
    return fits, unreachable


class RedisCounter:
    """Samples the client count of one or more Redis nodes while the load runs; keeps
    the peak of their sum, and each node's command counts at the end."""

    def __init__(self, *urls: str) -> None:
        import redis

        self._clients = [redis.Redis.from_url(url) for url in urls]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak = 0
        #: Per node, ``{command: calls}`` for the publish path (INFO commandstats).
        self.commands: list[dict[str, int]] = []

    def _sample(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                total = 0
                for client in self._clients:
                    # Our own sampling connection is not the server's.
                    total += int(client.info("clients")["connected_clients"]) - 1
                self.peak = max(self.peak, total)
            self._stop.wait(0.25)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for client in self._clients:
            with contextlib.suppress(Exception):
                stats = client.info("commandstats")
                self.commands.append(
                    {
                        name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                        for name in ("evalsha", "xadd", "spublish", "publish")
                    }
                )
            client.close()


def start_profiler(pid: int, config: dict[str, t.Any], output: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy for the publishing phase, as collapsed stacks."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [
        binary, "record",
        "--pid", str(pid),
        "--duration", str(max(1, int(config.get("duration", 5)))),
        "--rate", "250",
        "--format", "raw",
        "--nonblocking",
        "--output", str(output),
    ]  # fmt: skip
    return subprocess.Popen(
        pinned(LOAD_CPU, command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--contender", action="append", choices=sorted(CONTENDERS))
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run of everything")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the broadcast (or --scenario latency)"
    )
    parser.add_argument("--output", type=Path, default=None, help="where to write the tables")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


def selected(args: argparse.Namespace) -> list[tuple[Scenario, list[Contender]]]:
    plan = []
    for name in args.scenario or list(SCENARIOS):
        scenario = SCENARIOS[name]
        names = [c for c in scenario.contenders if not args.contender or c in args.contender]
        # Asked for by name: the ones no scenario lists (flask_sse_push_wake) too,
        # but not one made for another scenario (parked_floor serves no publish).
        listed = {c for s in SCENARIOS.values() for c in s.contenders}
        if scenario.mode in ("broadcast", "latency") and scenario.workers == 1:
            names += [
                c
                for c in args.contender or ()
                if c not in ALL and c not in names and c not in listed
            ]
        if args.smoke and not args.contender:
            names = [c for c in names if c in scenario.smoke_contenders]
        if names:
            plan.append((scenario, [CONTENDERS[c] for c in names]))
    return plan


def profile(bench: Bench, name: str, contender_name: str = "flask_sse_push") -> int:
    """Profile a contender's worker under a broadcast or latency scenario with py-spy."""
    scenario, contender = SCENARIOS[name], CONTENDERS[contender_name]
    if scenario.mode not in ("broadcast", "latency"):
        print("--profile works with the broadcast and latency scenarios only")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as workdir:
        raw = Path(workdir) / "profile.txt"
        run = bench.run_once(scenario, contender, profile=raw)
        if not raw.exists():
            print("py-spy wrote no profile; is py-spy installed, and may it ptrace?")
            return 1
        text = report.profile_summary(
            raw.read_text(), run.data, scenario.name, contender=contender_name
        )
    stem = "PROFILE" if name == "broadcast" else f"PROFILE-{name}"
    if contender_name != "flask_sse_push":
        stem += f"-{contender_name}"
    output = PROFILE.with_name(f"{stem}.md")
    output.write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_nofile()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    runs = args.runs or (1 if args.smoke else 3)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    outcomes: dict[str, dict[str, Outcome]] = {}
    with Processes() as procs:
        bench = Bench(procs, smoke=args.smoke, verbose=args.verbose, nofile=limit)
        if args.profile:
            scenario = (args.scenario or ["broadcast"])[0]
            return profile(bench, scenario, (args.contender or ["flask_sse_push"])[0])
        for scenario, contenders in selected(args):
            bench.log(f"{scenario.name}:")
            outcomes[scenario.name] = bench.measure(scenario, contenders, runs)
    meta = report.machine(
        started=started,
        runs=runs,
        smoke=args.smoke,
        nofile=limit,
        load=(load_before, os.getloadavg()),
        argv=sys.argv[1:] if argv is None else argv,
    )
    text = report.render(outcomes, meta, smoke=args.smoke)
    print(text)
    output = args.output
    if output is None and not (args.smoke or args.scenario or args.contender):
        output = RESULTS
    if output is not None:
        output.write_text(text)
        print(f"written to {output}", file=sys.stderr)
    failed = any(
        not run.ok for per in outcomes.values() for outcome in per.values() for run in outcome.runs
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; every server was stopped", file=sys.stderr)
        sys.exit(130)
