"""The example app behind a real nginx, with the config the docs recommend.

One nginx serves several ``server { }`` blocks, each on its own port: the
documented block as is, over HTTP/1.1 and over HTTP/2 with TLS, and variants of
it that show what each of its lines is for.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import ssl
import statistics
import subprocess
import tempfile
import time
import typing as t
import uuid
from pathlib import Path

import httpx
import pytest

from tests.apps.env_app import environment
from tests.support.proxy_helpers import (
    LineReader,
    Nginx,
    Publisher,
    Timings,
    indent,
    nginx_path,
    self_signed_certificate,
)
from tests.support.servers import ROOT, Gunicorn, free_port, start_gunicorn, stop

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser


#: The docs' "Behind nginx" section (docs/deploying.md) shows this verbatim, for the
#: ``http { }`` block; the tests change only the port.
NGINX_UPSTREAM = """\
upstream flask_sse_push {
    server 127.0.0.1:8000;
}
"""

#: The docs show this verbatim too, for the ``server { }`` block; most tests
#: use it unchanged.
NGINX_LOCATION = """\
location /events {
    proxy_pass http://flask_sse_push;
    # Pass each event on at once instead of filling a buffer first.
    proxy_buffering off;
    proxy_cache off;
    # Talk HTTP/1.1 to the app (nginx defaults to 1.0), without the
    # "Connection: close" nginx would otherwise send.
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    # A proxy_set_header here drops those inherited from server {}: repeat yours.
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    # Above SSE_PUSH_KEEPALIVE (15 s): keepalives then keep idle streams open.
    proxy_read_timeout 60s;
}
"""

#: Publish-to-arrival time every event must stay under through the proxy.
PROMPT = 0.2


def _changed(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the block exactly once"
    return text.replace(old, new)


def _to_upstream(location: str, upstream: str) -> str:
    return _changed(location, "proxy_pass http://flask_sse_push;", f"proxy_pass http://{upstream};")


#: The documented block with a read timeout short enough to test in seconds.
SHORT_READ_TIMEOUT = _changed(NGINX_LOCATION, "proxy_read_timeout 60s;", "proxy_read_timeout 1s;")
#: A block that leaves everything to nginx's defaults: proxy_buffering on, and
#: HTTP/1.0 to the app, whose unchunked body nginx passes on a full buffer at a time.
NAIVE = "location /events {\n    proxy_pass http://flask_sse_push;\n}\n"


def _nginx_version() -> tuple[int, ...]:
    out = subprocess.run([nginx_path(), "-v"], capture_output=True, text=True).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out)
    assert match, f"cannot read the nginx version from {out!r}"
    return tuple(int(part) for part in match.groups())


def _server(port: int, location: str, tls: tuple[Path, Path] | None = None) -> str:
    if tls is None:
        listen = f"listen 127.0.0.1:{port};\n"
    else:
        cert, key = tls
        # "http2 on;" exists from nginx 1.25.1; before, http2 was a listen parameter.
        if _nginx_version() >= (1, 25, 1):
            listen = f"listen 127.0.0.1:{port} ssl;\nhttp2 on;\n"
        else:
            listen = f"listen 127.0.0.1:{port} ssl http2;\n"
        listen += f"ssl_certificate {cert};\nssl_certificate_key {key};\n"
    upstream = re.search(r"proxy_pass (http://\w+);", location)
    assert upstream is not None
    rest = f"location / {{\n    proxy_pass {upstream.group(1)};\n}}\n"
    return "server {\n" + indent(listen + location + rest) + "}\n"


@dataclasses.dataclass
class Proxy:
    """The app servers and the nginx in front of them, one port per config."""

    nginx: Nginx
    ports: dict[str, int]
    #: The app server behind each config.
    upstreams: dict[str, Gunicorn]
    certificate: Path

    def url(self, name: str, path: str = "/events?channel=default") -> str:
        scheme = "https" if name == "http2" else "http"
        return f"{scheme}://127.0.0.1:{self.ports[name]}{path}"

    def publish_url(self, name: str) -> str:
        """Where to publish so that streams through ``name`` get the event."""
        return f"{self.upstreams[name].url}/api/publish"


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    """nginx in front of two example apps: ``flask_sse_push`` with a 0.3 s
    keepalive, and ``plain``, without ``X-Accel-Buffering`` and with the
    default 15 s keepalive."""
    nginx_path()
    directory = Path(tempfile.mkdtemp(prefix="nginx-tls-"))
    tls = self_signed_certificate(directory)
    servers: list[Gunicorn] = []
    try:
        app = start_gunicorn(
            "tests.apps.env_app:create_app()", env=environment(SSE_PUSH_KEEPALIVE=0.3)
        )
        servers.append(app)
        plain = start_gunicorn(
            "tests.apps.env_app:create_app_without_accel_buffering()",
            env=environment(SSE_PUSH_KEEPALIVE=15.0),
        )
        servers.append(plain)
        configs = {
            "documented": (NGINX_LOCATION, None, app),
            "http2": (NGINX_LOCATION, tls, app),
            "short_timeout": (SHORT_READ_TIMEOUT, None, app),
            "short_timeout_rare_keepalive": (
                _to_upstream(SHORT_READ_TIMEOUT, "plain"),
                None,
                plain,
            ),
            "naive": (NAIVE, None, app),
            "naive_no_header": (_to_upstream(NAIVE, "plain"), None, plain),
        }
        ports = {name: free_port() for name in configs}
        upstream = _changed(NGINX_UPSTREAM, "127.0.0.1:8000", f"127.0.0.1:{app.port}")
        body = upstream + f"upstream plain {{\n    server 127.0.0.1:{plain.port};\n}}\n"
        for name, (location, server_tls, _) in configs.items():
            body += _server(ports[name], location, server_tls)
        upstreams = {name: upstream for name, (_, _, upstream) in configs.items()}
        upstreams["plain_direct"] = plain
        with Nginx(body, list(ports.values())) as nginx:
            # Not a config: the plain app itself, with no nginx in between.
            ports["plain_direct"] = plain.port
            yield Proxy(nginx, ports, upstreams, tls[0])
    finally:
        for server in servers:
            # No graceful wait: the tests are over, and idle streams would hold it up.
            stop(server.process, signal.SIGQUIT)
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def _client(proxy: Proxy, *, http2: bool = False, read_timeout: float = 5.0) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(proxy.certificate))
    return httpx.Client(http2=http2, verify=verify, timeout=httpx.Timeout(10, read=read_timeout))


def measure(
    proxy: Proxy,
    name: str,
    *,
    count: int = 30,
    interval: float = 0.05,
    wait: float = 2.0,
    headers_first: bool = True,
) -> Timings:
    """Publish ``count`` probes and note when each reaches a stream through ``name``.

    :param headers_first: start publishing when the response headers are in,
        which proves the view has subscribed. Otherwise publishing starts 0.5 s
        after the request, for proxies that hold back the headers too.
    """
    prefix = f"probe-{uuid.uuid4().hex[:8]}-"
    probes = [f"{prefix}{n}" for n in range(count)]
    timings = Timings()
    delay = 0.0 if headers_first else 0.5
    publisher = Publisher(proxy.publish_url(name), probes, interval, timings, delay=delay)
    if not headers_first:
        publisher.start()
    deadline = time.monotonic() + delay + count * interval + wait
    try:
        with _client(proxy, http2=name == "http2", read_timeout=wait) as client:
            with client.stream("GET", proxy.url(name)) as response:
                assert response.status_code == 200
                timings.headers = True
                if headers_first:
                    publisher.start()
                reader = LineReader(response)
                while len(timings.received) < count and time.monotonic() < deadline:
                    lines = reader.read(deadline, stop=lambda line: line.startswith("data: probe"))
                    for at, line in lines:
                        if line.startswith(f"data: {prefix}"):
                            timings.received[line.removeprefix("data: ")] = at
                    if reader.ended or not lines:
                        break
    except httpx.ReadTimeout:
        if headers_first:
            raise
    publisher.finish()
    return timings


def _summary(label: str, timings: Timings) -> str:
    latencies = sorted(timings.latencies())
    if not latencies:
        headers = "" if timings.headers else " (nor the response headers)"
        return f"{label}: 0 of {len(timings.published)} events arrived{headers}"
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return (
        f"{label}: {len(latencies)} of {len(timings.published)} arrived,"
        f" median {statistics.median(latencies) * 1000:.1f} ms,"
        f" p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )


@pytest.mark.integration
@pytest.mark.slow
def test_events_arrive_promptly_through_the_documented_config(proxy: Proxy) -> None:
    """Through the documented block, each event arrives within 200 ms of its publish."""
    timings = measure(proxy, "documented")
    print(_summary("documented config", timings))
    assert len(timings.received) == len(timings.published)
    assert max(timings.latencies()) < PROMPT, _summary("documented config", timings)


@pytest.mark.integration
@pytest.mark.slow
def test_x_accel_buffering_keeps_events_prompt_when_nginx_buffers(proxy: Proxy) -> None:
    """Behind a block left to nginx's defaults, the header alone keeps events
    prompt; without it nothing arrives, though the app sends each event at once."""
    with_header = measure(proxy, "naive")
    direct = measure(proxy, "plain_direct")
    without_header = measure(proxy, "naive_no_header", headers_first=False)
    print(_summary("nginx defaults, X-Accel-Buffering: no", with_header))
    print(_summary("no X-Accel-Buffering, straight from gunicorn", direct))
    print(_summary("nginx defaults, no X-Accel-Buffering", without_header))
    for timings in (with_header, direct):
        assert len(timings.received) == len(timings.published)
        assert max(timings.latencies()) < PROMPT, _summary("prompt case", timings)
    late = [latency for latency in without_header.latencies() if latency >= PROMPT]
    missing = len(without_header.published) - len(without_header.received)
    assert late or missing, "nginx passed unmarked events on at once: the comparison shows nothing"


def _is_keepalive(line: str) -> bool:
    # Exactly: the first chunk's ": keepalive <ms>" announces the interval.
    return line == ": keepalive"


@pytest.mark.integration
@pytest.mark.slow
def test_keepalives_keep_an_idle_stream_open_past_the_read_timeout(proxy: Proxy) -> None:
    """With proxy_read_timeout 1 s and a 0.3 s keepalive, a stream idle for 3 s
    stays open, and then still receives an event."""
    with _client(proxy) as client, client.stream("GET", proxy.url("short_timeout")) as response:
        assert response.status_code == 200
        reader = LineReader(response)
        opened = time.monotonic()
        idle = reader.read(opened + 3.0)
        assert not reader.ended, f"nginx closed the stream after {time.monotonic() - opened:.1f} s"
        assert time.monotonic() - opened >= 3.0
        assert sum(_is_keepalive(line) for _, line in idle) >= 5
        probe = f"after-idle-{uuid.uuid4().hex[:8]}"
        client.post(proxy.publish_url("short_timeout"), json={"data": probe}).raise_for_status()
        later = reader.read(time.monotonic() + 5.0, stop=lambda line: line == f"data: {probe}")
        assert later and later[-1][1] == f"data: {probe}", later


@pytest.mark.integration
@pytest.mark.slow
def test_without_keepalives_nginx_cuts_the_idle_stream(proxy: Proxy) -> None:
    """The control: with keepalives every 15 s, the same 1 s read timeout ends the stream."""
    url = proxy.url("short_timeout_rare_keepalive")
    with _client(proxy) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        reader = LineReader(response)
        opened = time.monotonic()
        reader.read(opened + 5.0)
        assert reader.ended
        assert time.monotonic() - opened < 4.0


@pytest.mark.integration
@pytest.mark.slow
def test_http2_response_has_no_connection_header(proxy: Proxy) -> None:
    """Over HTTP/2 the stream answers without a Connection header, and events flow."""
    timings = measure(proxy, "http2", count=10)
    print(_summary("documented config over HTTP/2", timings))
    assert len(timings.received) == len(timings.published)
    with _client(proxy, http2=True) as client, client.stream("GET", proxy.url("http2")) as response:
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "connection" not in response.headers


@pytest.mark.integration
@pytest.mark.slow
def test_chromium_reads_the_stream_over_http2(proxy: Proxy, browser: Browser) -> None:
    """The example page, served through nginx over HTTP/2 and TLS, receives a
    published event on its EventSource, and nginx logs that stream as HTTP/2."""
    from playwright.sync_api import expect

    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(proxy.url("http2", "/"))
        expect(page.locator("#push-state")).to_have_text("open")
        protocol = page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
        assert protocol == "h2"
        probe = f"over-h2-{uuid.uuid4().hex[:8]}"
        page.fill("#publish-data", probe)
        page.click("#publish")
        expect(page.locator("#pushed li")).to_have_text([re.compile(rf"^\[\S+\] {probe}$")])
    finally:
        context.close()
    # nginx logs a request when it ends, here when the page closed.
    logged = re.compile(r'"GET /events\?channel=default\S* HTTP/2.0" 200')
    deadline = time.monotonic() + 10
    while not logged.search(proxy.nginx.access_log()):
        assert time.monotonic() < deadline, proxy.nginx.access_log()
        time.sleep(0.1)


def test_docs_show_the_tested_nginx_config() -> None:
    """The docs' "Behind nginx" config is the one these tests run."""
    page = (ROOT / "docs" / "deploying.md").read_text(encoding="utf-8")
    assert NGINX_UPSTREAM in page, "docs/deploying.md must show NGINX_UPSTREAM verbatim"
    assert NGINX_LOCATION in page, "docs/deploying.md must show NGINX_LOCATION verbatim"
