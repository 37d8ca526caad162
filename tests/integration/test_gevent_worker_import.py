"""The worker class explains a missing gevent in our own words."""

from __future__ import annotations

import subprocess
import sys

#: Runs in a fresh interpreter where ``import gevent`` fails, as without the extra.
_WITHOUT_GEVENT = """
import sys
sys.modules["gevent"] = None
import flask_sse_push.servers.gunicorn as servers
servers.GeventWorker
"""


def test_the_worker_class_without_gevent_says_which_extra_to_install() -> None:
    """gunicorn's "gevent worker requires gevent 24.10.1 or higher" becomes a message
    that names the worker class and the ``gevent`` extra."""
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_GEVENT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "flask-sse-push[gevent]" in result.stderr
    assert "GeventWorker needs gunicorn's gevent worker" in result.stderr
