"""Turn bench runs into Markdown: one table per scenario, the targets, the machine."""

from __future__ import annotations

import collections
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import typing as t

from procs import ROOT, redis_server_path
from scenarios import SCENARIOS, Scenario

if t.TYPE_CHECKING:
    from run import Outcome, Run

PACKAGES = (
    "Flask-SSE-Push", "Flask", "Werkzeug", "gevent", "greenlet", "gunicorn", "redis",
    "Flask-SSE", "sse-starlette", "starlette", "uvicorn", "uvloop", "httptools", "py-spy",
)  # fmt: skip


def _median(runs: list[Run], key: str) -> float:
    values = [float(run.data[key]) for run in runs if key in run.data]
    return statistics.median(values) if values else float("nan")


def _sum(runs: list[Run], key: str) -> int:
    return sum(int(run.data.get(key, 0)) for run in runs)


def _num(value: float, digits: int = 0) -> str:
    if value != value:  # NaN: no data
        return "-"
    return f"{value:,.{digits}f}"


def brief(scenario: Scenario, run: Run) -> str:
    """One line about one run, for the progress log."""
    data = run.data
    if not run.ok:
        return f"FAILED: {data.get('why', '?')}"
    if scenario.mode == "broadcast":
        extra = f", redis conns {data['redis_conns']}" if "redis_conns" in data else ""
        if "shard_commands" in data:
            # evalsha = publishes; xadd and spublish run inside the publish script.
            shards = "/".join(str(node.get("evalsha", 0)) for node in data["shard_commands"])
            extra += f", publishes per shard {shards}"
        return (
            f"{data['deliveries_per_s']:,.0f} deliveries/s, {data['events_per_s']:,.0f} events/s,"
            f" lost {data['lost']}{extra}, CPU server {data['server_cpu']:.0%}"
            f" load gen {data['loadgen_cpu']:.0%}"
        )
    if scenario.mode == "latency":
        return (
            f"p50 {data['p50_ms']:.2f} ms, p99 {data['p99_ms']:.2f} ms, lost {data['lost']},"
            f" CPU server {data['server_cpu']:.0%} load gen {data['loadgen_cpu']:.0%}"
        )
    if scenario.mode == "idle":
        return "; ".join(
            f"{s['open']:,} open, {s['per_conn'] / 1024:.1f} KiB/conn, {s['kept']:,} kept"
            for s in data["steps"]
        )
    return (
        f"{data['opened']:,} open in {data['all_open_s']:.2f} s, p99 {data['p99_ms']:.0f} ms,"
        f" {data['failed']} failed"
    )


def _ok(outcome: Outcome) -> list[Run]:
    return [run for run in outcome.runs if run.ok]


def _cell_reason(outcome: Outcome) -> str | None:
    if outcome.unavailable:
        return outcome.unavailable
    good = _ok(outcome)
    if not good:
        whys = {run.data.get("why", "?") for run in outcome.runs}
        return "failed: " + "; ".join(sorted(whys))[:120]
    return None


def _note(outcome: Outcome) -> str:
    bad = len(outcome.runs) - len(_ok(outcome))
    return f" ({bad} of {len(outcome.runs)} runs failed)" if bad else ""


def _loss(runs: list[Run]) -> tuple[int, str]:
    lost = _sum(runs, "lost")
    expected = _sum(runs, "expected")
    return lost, f"{100 * lost / expected:.2f} %" if expected else "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _rows(
    per: dict[str, Outcome], width: int, cells: t.Callable[[list[Run]], list[str]]
) -> list[list[str]]:
    rows = []
    for name, outcome in per.items():
        reason = _cell_reason(outcome)
        if reason is not None:
            rows.append([name, reason] + [""] * (width - 2))
        else:
            row = [name, *cells(_ok(outcome))]
            row[-1] += _note(outcome)
            rows.append(row)
    return rows


def _fanout_table(per: dict[str, Outcome], redis: bool) -> list[str]:
    header = [
        "contender", "deliveries/s", "events/s", "lost", "loss", "ended early",
        "server CPU", "load gen CPU",
    ]  # fmt: skip
    if redis:
        header.insert(1, "Redis connections")

    def cells(runs: list[Run]) -> list[str]:
        lost, share = _loss(runs)
        row = [
            _num(_median(runs, "deliveries_per_s")),
            _num(_median(runs, "events_per_s")),
            str(lost),
            share,
            str(_sum(runs, "ended_early")),
            f"{_median(runs, 'server_cpu'):.0%}",
            f"{_median(runs, 'loadgen_cpu'):.0%}",
        ]
        if redis:
            row.insert(0, _num(_median(runs, "redis_conns")))
        return row

    return _table(header, _rows(per, len(header), cells))


def _latency_table(per: dict[str, Outcome]) -> list[str]:
    header = [
        "contender", "p50 ms", "p99 ms", "max ms", "fan-out ms", "lost", "loss", "server CPU",
        "load gen CPU",
    ]  # fmt: skip

    def cells(runs: list[Run]) -> list[str]:
        lost, share = _loss(runs)
        fanout = [run for run in runs if "fanout_ms" in run.data]
        return [
            _num(_median(runs, "p50_ms"), 2),
            _num(_median(runs, "p99_ms"), 2),
            _num(_median(runs, "max_ms"), 1),
            _num(_median(fanout, "fanout_ms"), 2) if fanout else "-",
            str(lost),
            share,
            f"{_median(runs, 'server_cpu'):.0%}",
            f"{_median(runs, 'loadgen_cpu'):.0%}",
        ]

    return _table(header, _rows(per, len(header), cells))


def _idle_steps(runs: list[Run]) -> dict[int, list[dict[str, t.Any]]]:
    steps: dict[int, list[dict[str, t.Any]]] = collections.defaultdict(list)
    for run in runs:
        for step in run.data["steps"]:
            steps[int(step["target"])].append(step)
    return steps


def _idle_table(per: dict[str, Outcome]) -> list[str]:
    header = [
        "contender", "streams", "open", "keepalives kept", "RSS MiB", "KiB/conn", "connect s",
    ]  # fmt: skip
    rows = []
    for name, outcome in per.items():
        reason = _cell_reason(outcome)
        if reason is not None:
            rows.append([name, reason] + [""] * (len(header) - 2))
            continue
        for target, steps in sorted(_idle_steps(_ok(outcome)).items()):

            def med(key: str, steps: list[dict[str, t.Any]] = steps) -> float:
                return float(statistics.median(float(s[key]) for s in steps))

            kept = min(int(s["kept"]) for s in steps)
            opened = min(int(s["open"]) for s in steps)
            rows.append(
                [
                    name,
                    f"{target:,}",
                    f"{opened:,}",
                    f"{kept:,} ({100 * kept / opened:.1f} %)" if opened else "0",
                    _num(med("rss") / 2**20),
                    _num(med("per_conn") / 1024, 1),
                    _num(med("connect_s"), 1) + _note(outcome),
                ]
            )
        first = _ok(outcome)[0].data
        for target in first.get("unreachable", []):
            why = (
                f"n/a: needs > {target:,} open files per process; the hard limit here is"
                f" {first.get('nofile', 0):,} and raising it needs CAP_SYS_RESOURCE"
            )
            rows.append([name, f"{target:,}", why] + [""] * (len(header) - 3))
    return _table(header, rows)


def _storm_table(per: dict[str, Outcome]) -> list[str]:
    header = ["contender", "open", "errors (all runs)", "all open s", "p50 ms", "p99 ms"]

    def cells(runs: list[Run]) -> list[str]:
        errors: collections.Counter[str] = collections.Counter()
        for run in runs:
            errors.update(run.data.get("errors", {}))
        kinds = ", ".join(f"{k}: {v}" for k, v in errors.most_common(3))
        return [
            _num(_median(runs, "opened")),
            f"{_sum(runs, 'failed')}" + (f" ({kinds})" if kinds else ""),
            _num(_median(runs, "all_open_s"), 2),
            _num(_median(runs, "p50_ms"), 1),
            _num(_median(runs, "p99_ms"), 1),
        ]

    return _table(header, _rows(per, len(header), cells))


def _value(outcomes: dict[str, dict[str, Outcome]], scenario: str, name: str, key: str) -> float:
    outcome = outcomes.get(scenario, {}).get(name)
    if outcome is None or _cell_reason(outcome) is not None:
        return float("nan")
    return _median(_ok(outcome), key)


def _ratio(mine: float, theirs: float) -> float:
    return mine / theirs if theirs and theirs == theirs and mine == mine else float("nan")


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def ratios(outcomes: dict[str, dict[str, Outcome]]) -> list[str]:
    """flask_sse_push against every other row of the same run."""
    lines = []
    pairs = (
        ("broadcast", "flask_sse_push"),
        ("broadcast_each", "flask_sse_push"),
        ("redis_fanout", "flask_sse_push_redis"),
    )
    for scenario, ours in pairs:
        mine = _value(outcomes, scenario, ours, "deliveries_per_s")
        for name in outcomes.get(scenario, {}):
            if name == ours:
                continue
            value = _ratio(mine, _value(outcomes, scenario, name, "deliveries_per_s"))
            if value == value:
                lines.append(f"- {scenario}: {ours} = **{value:.2f}×** {name}")
    latency = outcomes.get("latency", {})
    mine_runs = latency.get("flask_sse_push")
    for name, outcome in latency.items():
        if name == "flask_sse_push" or mine_runs is None or not outcome.runs:
            continue
        # Runs took turns, so run i of each row met the same spell of the machine.
        per_run = [
            _ratio(a.data["p99_ms"], b.data["p99_ms"])
            for a, b in zip(mine_runs.runs, outcome.runs, strict=False)
            if a.ok and b.ok
        ]
        if per_run:
            shown = ", ".join(f"{value:.2f}×" for value in per_run)
            lines.append(f"- latency p99: flask_sse_push / {name}, run by run: {shown}")
    return lines


def targets(outcomes: dict[str, dict[str, Outcome]]) -> list[str]:
    """The issue's targets, each with the figure measured in this run."""
    rows: list[list[str]] = []

    def add(target: str, measured: float, fmt: str, ok: bool | None) -> None:
        shown = fmt.format(measured) if measured == measured else "-"
        rows.append([target, shown, _verdict(ok if measured == measured else None)])

    ours = _value(outcomes, "broadcast", "flask_sse_push", "deliveries_per_s")
    for name, goal in (("limit", 0.75), ("flask_sse", 10.0), ("sse_starlette", 1.2)):
        value = _ratio(ours, _value(outcomes, "broadcast", name, "deliveries_per_s"))
        add(f"broadcast ≥ {goal:g}× {name}", value, "{:.2f}×", value >= goal)
    outcome = outcomes.get("broadcast", {}).get("flask_sse_push")
    if outcome is not None and _cell_reason(outcome) is None:
        lost = float(_sum(_ok(outcome), "lost"))
        add("broadcast: no loss", lost, "{:.0f} lost", lost == 0)
    p99 = _value(outcomes, "latency", "flask_sse_push", "p99_ms")
    add("latency p99 ≤ 10 ms", p99, "{:.2f} ms", p99 <= 10)
    value = _ratio(p99, _value(outcomes, "latency", "limit", "p99_ms"))
    add("latency p99 ≤ 1.2× limit's", value, "{:.2f}×", value <= 1.2)
    idle = outcomes.get("idle", {}).get("flask_sse_push")
    if idle is not None and _cell_reason(idle) is None:
        steps = _idle_steps(_ok(idle))
        top = max(steps)
        held = min(min(int(s["open"]), int(s["kept"])) for s in steps[top])
        add(f"idle: {top:,} held with keepalives", held, "{:,.0f}", held >= top)
        for target in _ok(idle)[0].data.get("unreachable", []):
            add(f"idle: {target:,} held (open-file limit too low here)", float("nan"), "", None)
        for step in sorted(steps):
            at = statistics.median(float(s["per_conn"]) for s in steps[step]) / 1024
            add(f"idle: ≤ 4 KiB/conn at {step:,} (parked streams)", at, "{:.1f} KiB", at <= 4)
    conns = _value(outcomes, "redis_fanout", "flask_sse_push_redis", "redis_conns")
    workers = SCENARIOS["redis_fanout"].workers
    add(
        f"Redis connections = workers ({workers}) + const",
        conns,
        "{:.0f}",
        conns <= workers + 4,
    )
    theirs = _value(outcomes, "redis_fanout", "flask_sse", "redis_conns")
    add("Redis connections: flask_sse (for scale)", theirs, "{:.0f}", None)
    value = _ratio(
        _value(outcomes, "redis_fanout", "flask_sse_push_redis", "deliveries_per_s"),
        _value(outcomes, "redis_fanout", "flask_sse", "deliveries_per_s"),
    )
    add("Redis fan-out ≥ 10× flask_sse", value, "{:.2f}×", value >= 10)
    storm = outcomes.get("storm", {}).get("flask_sse_push")
    if storm is not None and _cell_reason(storm) is None:
        failed = float(_sum(_ok(storm), "failed"))
        add("connect storm: no errors", failed, "{:.0f} errors", failed == 0)
        p99 = _median(_ok(storm), "p99_ms")
        add("connect storm p99 (reported)", p99, "{:.0f} ms", None)
    return _table(["target (flask_sse_push)", "measured", ""], rows)


def render(outcomes: dict[str, dict[str, Outcome]], meta: dict[str, str], *, smoke: bool) -> str:
    title = "# Flask-SSE-Push benchmarks"
    lines = [title + (" (smoke run: tiny sizes, not figures)" if smoke else "")]
    lines += ["", *(f"- {key}: {value}" for key, value in meta.items())]
    for name, per in outcomes.items():
        scenario = SCENARIOS[name]
        size = scenario.size(smoke)
        keepalive = scenario.smoke_keepalive if smoke else scenario.keepalive
        title = scenario.title.format(workers=scenario.workers, keepalive=keepalive, **size)
        lines += ["", f"## {title}", ""]
        if scenario.mode == "broadcast":
            lines += _fanout_table(per, scenario.count_redis)
        elif scenario.mode == "latency":
            lines += _latency_table(per)
        elif scenario.mode == "idle":
            lines += _idle_table(per)
        else:
            lines += _storm_table(per)
    found = ratios(outcomes)
    if found:
        lines += ["", "## Ratios (same run)", "", *found]
    lines += ["", "## Targets", "", *targets(outcomes), ""]
    return "\n".join(lines)


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine(
    *,
    started: datetime.datetime,
    runs: int,
    smoke: bool,
    nofile: int,
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    argv: list[str],
) -> dict[str, str]:
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    redis = redis_server_path()
    commit = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python bench/run.py", *argv]),
        "machine": f"{os.cpu_count()} CPUs, {_cpu_model()}, Linux {platform.release()}",
        "python": platform.python_version(),
        "packages": ", ".join(versions),
        "redis-server": _run([redis, "--version"]).split(" sha=")[0] if redis else "none",
        "commit": commit,
        "method": (
            f"servers on CPU 0, load generator on CPU 1 (taskset); median of {runs} run(s)"
            f" per figure, contenders taking turns run by run, every server restarted per run;"
            f" open-file limit {nofile:,}"
        ),
        "load average (1/5/15 min) before → after": (
            f"{' '.join(f'{v:.2f}' for v in load[0])} → {' '.join(f'{v:.2f}' for v in load[1])}"
            " (other jobs share this machine: compare ratios within one run)"
        ),
    }


def profile_summary(
    raw: str,
    data: dict[str, t.Any],
    scenario: str,
    top: int = 20,
    contender: str = "flask_sse_push",
) -> str:
    """Summarise py-spy's collapsed stacks: where the worker spends its samples."""
    if not raw.strip():
        return "# Profile\n\npy-spy recorded no samples.\n"
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [
        f"# Profile: {contender} worker under {scenario}",
        "",
        f"py-spy, 250 Hz, {samples:,} samples during the publishing phase."
        f" That run: {data.get('deliveries_per_s', 0):,.0f} deliveries/s,"
        f" {data.get('events_per_s', 0):,.0f} events/s, lost {data.get('lost', '?')}.",
        "",
        "## Own time (top frames)",
        "",
    ]
    lines += _table(
        ["%", "frame"],
        [[f"{100 * n / samples:.1f}", f"`{frame}`"] for frame, n in own.most_common(top)],
    )
    lines += ["", "## Inclusive time", ""]
    lines += _table(
        ["%", "frame"],
        [[f"{100 * n / samples:.1f}", f"`{frame}`"] for frame, n in total.most_common(top)],
    )
    return "\n".join(lines) + "\n"
