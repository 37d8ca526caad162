"""``publish()`` from any thread, on every broker, inside and outside gevent.

Every publish either returns an id and its event arrives exactly once, or raises
``BrokerError`` and its event never arrives; afterwards a publish from a view works.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
import typing as t
import urllib.request

import pytest

from flask_sse_push import BrokerError, MemoryBroker, Publisher, ServerSentEvent
from flask_sse_push.brokers.redis import RedisBroker
from tests.support.redis_helpers import SSEClient, pump, take
from tests.support.servers import Gunicorn, RedisServer, gunicorn

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    from flask_sse_push import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "tests.apps.load_app:create_app()"
COUNT = 160
WORKERS = 8


def post(url: str, timeout: float = 120.0) -> tuple[int, t.Any]:
    request = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


#: Where publish() runs: gevent's own threads exist only in a gevent worker.
MODES = {
    "gevent": ["executor", "hub", "os", "greenlet", "main"],
    "gthread": ["executor", "os", "main"],
}
CASES = [
    pytest.param((broker, worker), mode, id=f"{broker}-{worker}-{mode}")
    for broker in ("memory", "redis")
    for worker, modes in MODES.items()
    for mode in modes
]


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> Iterator[tuple[str, str, Gunicorn]]:
    broker, worker = request.param
    url = redis_server.url if broker == "redis" else "memory://"
    env = {"SSE_PUSH_BROKER_URL": url, "SSE_PUSH_REDIS_PREFIX": f"threads-{worker}:"}
    # gunicorn's helper starts gevent workers; a later -k wins.
    args = ("-k", "gthread", "--threads", "16") if worker == "gthread" else ()
    with gunicorn(APP, env=env, extra_args=args) as running:
        yield broker, worker, running


@pytest.mark.parametrize(("server", "mode"), CASES, indirect=["server"])
def test_publish_from_any_thread_in_a_server(server: tuple[str, str, Gunicorn], mode: str) -> None:
    _, _, running = server
    channel = f"c-{mode}"
    client = SSEClient(running.port, f"/events?channel={channel}")
    try:
        pump([client], lambda: client.status is not None, what="the stream to open")
        assert client.status == 200
        status, result = post(
            f"{running.url}/publish-threads?mode={mode}&count={COUNT}"
            f"&workers={WORKERS}&channel={channel}"
        )
        assert status == 200, result
        assert result["wrong"] == {}, "publish() raised something other than BrokerError"
        # Redis is up: nothing has a reason to fail.
        assert result["refused"] == {}
        sent = result["sent"]
        assert len(sent) == COUNT

        def received() -> list[str]:
            return [e.data for e in client.events if e.event == "message"]

        pump([client], lambda: len(received()) >= len(sent), what=f"{len(sent)} events")
        time.sleep(0.5)  # anything sent twice, or sent although refused, shows up now
        pump([client], lambda: True)
        assert sorted(received()) == sorted(sent), "each sent event arrives exactly once"
        assert not set(received()) & set(result["refused"])
        status, after = post(f"{running.url}/publish?channel={channel}&data=after")
        assert status == 200, f"an ordinary publish after the threads failed: {after}"
    finally:
        client.close()
    assert "Traceback" not in running.output()


# -- outside gevent: plain threads in this process ------------------------------------


@pytest.fixture(params=["memory", "redis"])
def broker(
    request: pytest.FixtureRequest, redis_server: RedisServer, prefix: str
) -> Iterator[Broker]:
    made: Broker
    if request.param == "memory":
        made = MemoryBroker()
    else:
        made = RedisBroker.from_url(redis_server.url, prefix=prefix)
    yield made
    made.close()


def test_publish_from_plain_threads(broker: Broker) -> None:
    sub = broker.subscribe(["plain"])
    try:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            futures = [
                pool.submit(broker.publish, "plain", ServerSentEvent(f"e{i}")) for i in range(COUNT)
            ]
            ids = [future.result(60) for future in futures]
        events = take(sub, COUNT)
        assert sorted(e.data for e in events) == sorted(f"e{i}" for i in range(COUNT))
        assert len(set(ids)) == COUNT
        assert sub.get(0.3) == []
        # The thread that owns no pool still publishes.
        assert broker.publish("plain", ServerSentEvent("after"))
        assert [e.data for e in take(sub, 1)] == ["after"]
    finally:
        sub.close()


# -- an unreachable host cannot hang publish() or ping() ------------------------------


class Blackhole:
    """A port on loopback that takes no connection and answers nothing.

    Its accept queue holds one connection, which it fills itself, so the
    kernel drops every later SYN: a client's connect hangs as on a host that
    drops packets.
    """

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port: int = self.listener.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.filler.close()
        self.listener.close()


class Silent:
    """A port on loopback that accepts connections and never answers."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port: int = self.listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.listener.close()


def finishes(call: t.Callable[[], object], within: float) -> BaseException | None:
    """Run ``call`` in a thread; return what it raised, or fail if it hangs."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    if thread.is_alive():
        pytest.fail(f"{call} still waits after {within} s")
    return outcome[0]


@pytest.mark.parametrize("host", [Blackhole, Silent])
@pytest.mark.parametrize("call", ["publish", "ping", "publisher"])
def test_an_unreachable_host_cannot_hang_the_caller(
    host: type[Blackhole | Silent], call: str
) -> None:
    hole = host()
    broker = RedisBroker.from_url(hole.url)
    publisher = Publisher(hole.url)
    calls: dict[str, t.Callable[[], object]] = {
        "publish": lambda: broker.publish("x", ServerSentEvent("x")),
        "ping": broker.ping,
        "publisher": lambda: publisher.publish("x", channel="x"),
    }
    try:
        # Three connect attempts of 3 s, or one 5 s wait for an answer.
        raised = finishes(calls[call], within=25.0)
        assert isinstance(raised, BrokerError), raised
        assert "127.0.0.1" in str(raised)
    finally:
        hole.close()
        broker.close()
        publisher.close()
