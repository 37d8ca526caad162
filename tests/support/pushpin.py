"""A real Pushpin (with its own zurl) on 127.0.0.1, for GRIP tests and the bench.

Debian's pushpin routes its outgoing requests through a separate zurl service;
each :class:`Pushpin` starts its own, with every socket, run directory and log
in a temporary directory and every TCP port free, so tests can run side by side.
The config is built from the installed ``pushpin.conf`` and ``internal.conf``.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

from .servers import Gunicorn, free_port, missing, start_gunicorn, stop, wait_for_port

if t.TYPE_CHECKING:
    from collections.abc import Mapping

PUSHPIN_CONF = Path("/etc/pushpin/pushpin.conf")
INTERNAL_CONF = Path("/usr/lib/pushpin/internal.conf")


def pushpin_paths() -> tuple[str, str]:
    """The pushpin and zurl binaries, or skip (fail when strict) if missing."""
    pushpin, zurl = shutil.which("pushpin"), shutil.which("zurl")
    if not pushpin or not zurl or not PUSHPIN_CONF.exists() or not INTERNAL_CONF.exists():
        missing("pushpin and zurl (apt-get install pushpin)")
    return pushpin, zurl


class Pushpin:
    """Pushpin routing every path to ``backend_port``, signing with ``sig_key``.

    Its handler delivers at most ``message_rate`` (2500) messages a second and
    queues at most ``message_hwm`` (25000), as Debian's config says, unless
    ``handler`` overrides them.

    :attr:`port` is where clients connect, :attr:`publish_url` the GRIP URL.
    """

    def __init__(
        self,
        backend_port: int,
        sig_key: str,
        *,
        client_maxconn: int = 5000,
        handler: dict[str, str] | None = None,
    ) -> None:
        self.pushpin_bin, self.zurl_bin = pushpin_paths()
        self.backend_port = backend_port
        self.sig_key = sig_key
        self.client_maxconn = client_maxconn
        #: Extra ``[handler]`` settings, such as ``message_rate``.
        self.handler = handler or {}
        self.dir = Path(tempfile.mkdtemp(prefix="pushpin-"))
        self.port = free_port()
        self.publish_port = free_port()
        self.pushpin: subprocess.Popen[bytes] | None = None
        self.zurl: subprocess.Popen[bytes] | None = None
        self._write_configs()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def publish_url(self) -> str:
        return f"http://127.0.0.1:{self.publish_port}"

    def _ipc(self, name: str) -> str:
        return f"ipc://{self.dir}/{name}"

    def _write_configs(self) -> None:
        zurl = configparser.ConfigParser(interpolation=None)
        zurl.optionxform = str  # type: ignore[assignment, method-assign]
        zurl["General"] = {
            "in_spec": self._ipc("zurl-in"),
            "in_stream_spec": self._ipc("zurl-in-stream"),
            "out_spec": self._ipc("zurl-out"),
            "in_req_spec": self._ipc("zurl-req"),
            "defpolicy": "allow",
            "allow": "",
            "deny": "",  # the backend is on 127.0.0.1, which Debian's zurl.conf denies
            "max_open_requests": "2000",
            "buffer_size": "200000",
            "timeout": "600",
        }
        with (self.dir / "zurl.conf").open("w") as out:
            zurl.write(out)
        conf = configparser.ConfigParser(interpolation=None, strict=False)
        conf.optionxform = str  # type: ignore[assignment, method-assign]
        conf.read([INTERNAL_CONF, PUSHPIN_CONF])
        conf.remove_option("global", "include")
        conf["global"]["rundir"] = str(self.dir)
        conf["global"]["ipc_prefix"] = "pp-"
        conf["runner"].update(
            {
                "services": "condure,pushpin-proxy,pushpin-handler",
                "http_port": f"127.0.0.1:{self.port}",
                "logdir": str(self.dir),
                "client_maxconn": str(self.client_maxconn),
            }
        )
        conf["proxy"].update(
            {
                "routesfile": str(self.dir / "routes"),
                "sig_key": self.sig_key,
                "zurl_out_specs": self._ipc("zurl-in"),
                "zurl_out_stream_specs": self._ipc("zurl-in-stream"),
                "zurl_in_specs": self._ipc("zurl-out"),
            }
        )
        conf["handler"].update(
            {
                "push_in_spec": self._ipc("push-in"),
                "push_in_sub_specs": self._ipc("push-in-sub"),
                "push_in_http_addr": "127.0.0.1",
                "push_in_http_port": str(self.publish_port),
                "command_spec": self._ipc("handler-command"),
                **self.handler,
            }
        )
        with (self.dir / "pushpin.conf").open("w") as out:
            conf.write(out)
        (self.dir / "routes").write_text(f"* 127.0.0.1:{self.backend_port}\n")

    def start(self) -> None:
        """Start zurl and pushpin; return once both ports accept connections."""
        with (self.dir / "zurl.log").open("ab") as log:
            self.zurl = subprocess.Popen(
                [self.zurl_bin, f"--config={self.dir / 'zurl.conf'}"], stdout=log, stderr=log
            )
        with (self.dir / "pushpin.log").open("ab") as log:
            self.pushpin = subprocess.Popen(
                [self.pushpin_bin, "--config", str(self.dir / "pushpin.conf"), "--merge-output"],
                stdout=log,
                stderr=log,
                start_new_session=True,  # its services stop with it, and only they
            )
        try:
            wait_for_port(self.port, self.pushpin)
            wait_for_port(self.publish_port, self.pushpin)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"pushpin did not start:\n{self.log()}") from None
        time.sleep(0.3)  # the handler connects its sockets to the proxy after listening

    def log(self) -> str:
        """What pushpin wrote so far."""
        path = self.dir / "pushpin.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop pushpin (the runner stops its services) and zurl."""
        if self.pushpin is not None:
            stop(self.pushpin)
            if self.pushpin.poll() is None:
                os.killpg(self.pushpin.pid, 9)
            self.pushpin = None
        if self.zurl is not None:
            stop(self.zurl)
            self.zurl = None

    def __enter__(self) -> Pushpin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_grip_app(
    pushpin: Pushpin,
    redis_url: str,
    settings: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Gunicorn:
    """Start the GRIP test app (``tests.apps.grip_app``) under two gunicorn sync
    workers, on ``pushpin``'s backend port, publishing through it with its key and
    refusing requests that did not come through it; the caller must :func:`stop` it.

    :param settings: added to the app's environment (``SSE_PUSH_*`` keys).
    """
    env = {
        "SSE_PUSH_BROKER_URL": redis_url,
        "SSE_PUSH_GRIP_URL": pushpin.publish_url,
        "SSE_PUSH_GRIP_KEY": pushpin.sig_key,
        "SSE_PUSH_GRIP_REQUIRED": "1",
        **(settings or {}),
    }
    return start_gunicorn(
        "tests.apps.grip_app:create_app()",
        env=env,
        port=pushpin.backend_port,
        workers=2,
        worker="sync",
        extra_args=extra_args,
    )
