from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.servers import ROOT


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
    assert "flask_sse_push/brokers/memory.py" in names
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"flask_sse_push"}
    assert not [name for name in names if name.startswith(("tests/", "example_app/"))]
