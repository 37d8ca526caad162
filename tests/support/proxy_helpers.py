"""nginx, a self-signed certificate and a timing SSE reader, for the proxy tests.

nginx runs as one foreground process (``daemon off; master_process off;``) with
its config, logs, pid file and temp files in a temporary directory, so it needs
no root and leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
import threading
import time
import typing as t
from pathlib import Path

import httpx

from tests.support.servers import missing, stop, wait_for_port

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence

NGINX = "/usr/sbin/nginx"

_MAIN_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{
    worker_connections 512;
}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{body}
}}
"""


def nginx_path() -> str:
    """Return the nginx binary, or skip (fail when strict) without it."""
    if os.access(NGINX, os.X_OK):
        return NGINX
    found = shutil.which("nginx")
    if found is None:
        missing("nginx (apt-get install nginx)")
    return found


def indent(text: str, prefix: str = "    ") -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(True))


class Nginx:
    """A running nginx with the ``http { }`` body it was given."""

    def __init__(self, body: str, ports: Sequence[int]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nginx-"))
        self.config = self.dir / "nginx.conf"
        self.config.write_text(_MAIN_CONFIG.format(dir=self.dir, body=indent(body)))
        self.ports = ports
        self.process: subprocess.Popen[bytes] | None = None

    def _command(self, *args: str) -> list[str]:
        return [nginx_path(), "-p", str(self.dir), "-c", str(self.config), "-e",
                str(self.dir / "error.log"), *args]  # fmt: skip

    def start(self) -> None:
        checked = subprocess.run(self._command("-t"), capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx rejected its config:\n{checked.stderr}")
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            for port in self.ports:
                wait_for_port(port, self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.error_log()}") from None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.dir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a certificate for ``127.0.0.1`` and its key; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclasses.dataclass
class Timings:
    """When each probe was published and when its ``data:`` line arrived."""

    published: dict[str, float] = dataclasses.field(default_factory=dict)
    received: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Whether the response headers reached the client at all.
    headers: bool = False

    def latencies(self) -> list[float]:
        """Seconds from publish to arrival of the probes that arrived, in publish order."""
        return [
            self.received[probe] - sent
            for probe, sent in self.published.items()
            if probe in self.received
        ]


class Publisher(threading.Thread):
    """Publishes probes through the example app's form endpoint, noting when each went out."""

    def __init__(
        self,
        url: str,
        probes: Sequence[str],
        interval: float,
        timings: Timings,
        *,
        delay: float = 0.0,
    ) -> None:
        super().__init__(name="publisher", daemon=True)
        self.url = url
        self.probes = probes
        self.interval = interval
        self.timings = timings
        self.delay = delay
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            time.sleep(self.delay)
            with httpx.Client(timeout=10) as client:
                for probe in self.probes:
                    self.timings.published[probe] = time.monotonic()
                    client.post(self.url, json={"data": probe}).raise_for_status()
                    time.sleep(self.interval)
        except BaseException as exc:  # the test thread re-raises it
            self.error = exc

    def finish(self) -> None:
        """Wait for the last probe, and raise what publishing raised."""
        self.join(30)
        if self.error is not None:
            raise self.error
        if self.is_alive():
            raise RuntimeError("publishing took more than 30 s")


class LineReader:
    """Reads an SSE response line by line, noting when each line arrived."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()
        #: The stream ended (closed, or cut off mid-chunk by the proxy).
        self.ended = False

    def read(
        self, until: float, stop: Callable[[str], bool] = lambda line: False
    ) -> list[tuple[float, str]]:
        """Return ``(arrival time, line)`` pairs up to the ``until`` deadline
        (``time.monotonic()``), the first line ``stop`` accepts, the end of the
        stream, or the client's read timeout."""
        seen: list[tuple[float, str]] = []
        if self.ended:
            return seen
        try:
            for line in self._lines:
                seen.append((time.monotonic(), line))
                if stop(line) or time.monotonic() > until:
                    return seen
        except httpx.ReadTimeout:
            return seen
        except httpx.RemoteProtocolError:
            pass
        self.ended = True
        return seen
