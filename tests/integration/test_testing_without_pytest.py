"""``flask_sse_push.testing`` works without pytest; with it, ``-p`` still loads the fixture."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_the_helpers_import_and_work_without_pytest() -> None:
    """A ``None`` in ``sys.modules`` makes ``import pytest`` fail, as if it were not installed."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None
        from flask import Flask
        from flask_sse_push import SSEPush
        from flask_sse_push.testing import open_stream, parse_stream

        app = Flask("no_pytest")
        sse = SSEPush(app)
        client = app.test_client()
        with open_stream(client, channels=["news"]) as stream:
            with app.app_context():
                sse.publish("hello", channel="news")
            print(stream.next_event(timeout=5).data)
        print(parse_stream(b"data: x\\n\\n")[0].data)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", "x"]


def test_the_plugin_option_gives_the_fixture(tmp_path: Path) -> None:
    """What docs/testing.md tells users: ``-p flask_sse_push.testing`` and an ``app``
    fixture of their own give them ``sse_stream``, in a project of their own."""
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p flask_sse_push.testing\n")
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from flask import Flask
            from flask_sse_push import SSEPush

            sse = SSEPush()

            @pytest.fixture
            def app():
                app = Flask("user")
                sse.init_app(app)
                return app

            def test_push(app, sse_stream):
                stream = sse_stream(channels=["news"])
                with app.app_context():
                    sse.publish("hi", channel="news")
                assert stream.next_event(timeout=5).data == "hi"
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
