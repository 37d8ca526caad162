"""The benchmark harness still works: ``bench/run.py --smoke`` runs and reports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.support.servers import ROOT, missing


def _table(output: str, column: str) -> tuple[list[str], list[list[str]]]:
    """Return the header and rows of the first Markdown table with ``column``."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and column in cells:
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
            return cells, rows
    raise AssertionError(f"no table with a {column!r} column in:\n{output}")


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_run_reports_flask_sse_push_without_loss() -> None:
    if importlib.util.find_spec("gevent") is None or importlib.util.find_spec("gunicorn") is None:
        missing("gevent and gunicorn (pip install 'flask-sse-push[gevent]')")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    header, rows = _table(done.stdout, "deliveries/s")
    ours = [row for row in rows if row[0] == "flask_sse_push"]
    assert ours, f"no flask_sse_push row in:\n{done.stdout}"
    row = dict(zip(header, ours[0], strict=True))
    assert int(row["deliveries/s"].replace(",", "")) > 0
    assert row["lost"] == "0"
    assert row["ended early"] == "0"
