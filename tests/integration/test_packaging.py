"""The built wheel ships ``py.typed`` and ``client.js`` but no tests or example, passes
``twine check``, and runs the example app once installed in a fresh venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.support.servers import GEVENT_WORKER, ROOT, free_port, stop, wait_for_port
from tests.support.wire import parse


@pytest.mark.slow
def test_wheel_ships_py_typed_and_no_tests_or_example(tmp_path: Path) -> None:
    """The wheel holds the package and its type marker, and nothing else of the repo."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "flask_sse_push/py.typed" in names
    # The browser client and its types, served by the blueprint at <prefix>/client.js.
    assert "flask_sse_push/static/client.js" in names
    assert "flask_sse_push/static/client.d.ts" in names
    assert "flask_sse_push/brokers/memory/broker.py" in names
    assert "flask_sse_push/brokers/redis/cluster/broker.py" in names
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"flask_sse_push"}
    assert not [name for name in names if name.startswith(("tests/", "example_app/"))]


@pytest.mark.slow
@pytest.mark.integration
def test_installed_wheel_runs_the_example_and_passes_twine_check(tmp_path: Path) -> None:
    """Build sdist and wheel, check them with twine, install the wheel into a fresh
    venv, and serve the example app from outside the source tree."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    twine = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
    )
    assert twine.returncode == 0, twine.stdout + twine.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{wheel}[gevent]"],
        check=True,
        capture_output=True,
    )
    # The example is not in the wheel: copy it next to nothing else, so the
    # package can only come from the venv's site-packages.
    site = tmp_path / "site"
    shutil.copytree(ROOT / "example_app", site / "example_app")
    where = subprocess.run(
        [str(python), "-c", "import flask_sse_push; print(flask_sse_push.__file__)"],
        cwd=site,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(venv) in where
    port = free_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "gunicorn"), "-k", GEVENT_WORKER, "-w", "1", "--no-control-socket"]
        + ["-b", f"127.0.0.1:{port}", "example_app:create_app()"],
        cwd=site,
        env={**os.environ, "COUNTDOWN_INTERVAL": "0.01"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        body = httpx.get(f"http://127.0.0.1:{port}/api/sse", timeout=10).content
        script = httpx.get(f"http://127.0.0.1:{port}/events/client.js", timeout=10)
    finally:
        stop(server)
    assert script.status_code == 200
    assert script.content == (ROOT / "flask_sse_push" / "static" / "client.js").read_bytes()
    events = parse(body).events
    assert [e.last_event_id for e in events][:1] == ["1"]
    assert events[-1].type == "end" and len(events) == 9
