"""RedisBroker and Publisher against a real redis-server: ids, connections, outages and
restarts, health, forks, and the package without redis-py installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import typing as t
import warnings

import pytest
import redis

from flask_sse_push import (
    BrokerError,
    ChannelError,
    Publisher,
    ServerSentEvent,
)
from flask_sse_push.brokers.redis import RedisBroker
from flask_sse_push.brokers.redis._scripts import parse_id
from tests.support.redis_helpers import (
    Inspector,
    redis_client,
    sse_clients,
    take,
    wait_until,
)
from tests.support.servers import RedisServer

if t.TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def real(redis_server: RedisServer, prefix: str) -> Iterator[RedisBroker]:
    """A broker on the module's redis-server, under a prefix of its own."""
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix)
    yield broker
    broker.close()


def numsub(client: Inspector, prefix: str, *channels: str) -> list[int]:
    names = [f"{prefix}channel:{name}" for name in channels]
    return [int(count) for _, count in client.pubsub_numsub(*names)]


@pytest.mark.integration
class TestIds:
    def test_ids_grow_across_channels_in_publish_order(self, real: RedisBroker) -> None:
        """Many publishes in one millisecond on several channels still get rising ids."""
        ids = [real.publish("abc"[n % 3], ServerSentEvent(str(n))) for n in range(300)]
        keys = [key for key in map(parse_id, ids) if key is not None]
        assert keys == sorted(keys)
        assert len(set(keys)) == 300

    def test_stream_is_trimmed_to_about_history(
        self, redis_server: RedisServer, prefix: str, inspector: Inspector
    ) -> None:
        """MAXLEN ~ keeps at least history entries and at most about one node more."""
        broker = RedisBroker.from_url(redis_server.url, prefix=prefix, history=10)
        try:
            for n in range(600):
                broker.publish("a", ServerSentEvent(str(n), id=f"u{n}"))
        finally:
            broker.close()
        assert 10 <= inspector.xlen(f"{prefix}stream:a") <= 10 + 100
        # The user-id index is pruned too, so it cannot grow without bound.
        assert inspector.hlen(f"{prefix}ids:a") <= 2 * 10 + 100

    def test_malformed_cursors_get_a_reset(self, real: RedisBroker) -> None:
        """Cursors Redis would reject, or from the future, are answered with a reset."""
        newest = real.publish("a", ServerSentEvent("x"))
        ms = int(newest.split("-")[0])
        for cursor in ["1-2-3", "99999999999999999999-0", "-1", f"{ms + 10**6}-0", " 5-0"]:
            with real.subscribe(["a"], last_event_id=cursor) as sub:
                (reset,) = take(sub, 1)
            assert (reset.event, reset.id) == ("reset", newest)
            assert json.loads(reset.data)["reason"] == "unknown"


@pytest.mark.integration
class TestConnections:
    def test_one_subscriber_connection_for_many_clients(
        self, real: RedisBroker, prefix: str, inspector: Inspector
    ) -> None:
        """Fifty clients on ten channels share one connection, SUBSCRIBEd once per channel."""
        names = [f"c{n}" for n in range(10)]
        subs = [real.subscribe([names[n % 10], names[(n + 3) % 10]]) for n in range(50)]
        try:
            assert len(sse_clients(inspector)) == 1
            assert numsub(inspector, prefix, *names) == [1] * 10
            real.publish("c0", ServerSentEvent("hi"))
            assert len(sse_clients(inspector)) <= 2
        finally:
            for sub in subs:
                sub.close()

    def test_unsubscribes_after_the_last_local_client(
        self, real: RedisBroker, prefix: str, inspector: Inspector
    ) -> None:
        """The channel stays subscribed while one client is left, and not after."""
        one, two = real.subscribe(["a"]), real.subscribe(["a"])
        one.close()
        real.publish("a", ServerSentEvent("still here"))
        assert [e.data for e in take(two, 1)] == ["still here"]
        assert numsub(inspector, prefix, "a") == [1]
        two.close()
        wait_until(lambda: numsub(inspector, prefix, "a") == [0], what="UNSUBSCRIBE")

    def test_churn_leaves_no_subscription_or_queue(
        self, real: RedisBroker, prefix: str, inspector: Inspector
    ) -> None:
        """2,000 concurrent subscribe/close cycles while events flow leave nothing behind."""
        stop = threading.Event()
        failures: list[BaseException] = []

        def publish() -> None:
            while not stop.is_set():
                real.publish("c0", ServerSentEvent("tick"))
                stop.wait(0.002)

        def churn(worker: int) -> None:
            try:
                for n in range(250):
                    name = f"c{(worker + n) % 20}"
                    with real.subscribe([name, "c0"]) as sub:
                        sub.get(0)
            except BaseException as exc:  # reported below
                failures.append(exc)

        publisher = threading.Thread(target=publish)
        publisher.start()
        workers = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(60)
        stop.set()
        publisher.join(10)
        assert failures == []
        assert real.subscriber_count() == 0
        wait_until(lambda: inspector.pubsub_channels(f"{prefix}*") == [], what="UNSUBSCRIBE")
        listener = real._listeners.current
        assert listener is not None
        wait_until(lambda: listener.channels == {}, what="the channel table to empty")


class TestOutage:
    @pytest.mark.integration
    def test_dropped_connection_catches_up_from_the_stream(
        self, real: RedisBroker, inspector: Inspector
    ) -> None:
        """Events published while the listener reconnects arrive, once, in order."""
        with real.subscribe(["a", "b"]) as sub:
            first = real.publish("a", ServerSentEvent("before"))
            take(sub, 1)
            killed = inspector.client_kill_filter(_type="pubsub")
            assert killed == 1
            ids = [first]
            for n in range(30):  # some land while the listener is away
                ids.append(real.publish("ab"[n % 2], ServerSentEvent(str(n))))
            events = take(sub, 30)
            assert [e.id for e in events] == ids[1:]
            assert sub.get(0.2) == []

    @pytest.mark.integration
    def test_redis_restart_with_persistence_loses_nothing(self) -> None:
        """Across a crash and restart of redis-server, live clients miss no event."""
        with RedisServer(persist=True) as server:
            broker = RedisBroker.from_url(server.url)
            try:
                with broker.subscribe(["a"]) as sub:
                    ids = [broker.publish("a", ServerSentEvent("before"))]
                    take(sub, 1)
                    server.stop(signal.SIGKILL)
                    wait_until(lambda: raises_broker_error(broker), what="outage detection")
                    server.start()
                    ids += [broker.publish("a", ServerSentEvent(str(n))) for n in range(5)]
                    events = take(sub, 5)
                    assert [e.id for e in events] == ids[1:]
                    with broker.subscribe(["a"], last_event_id=ids[0]) as again:
                        assert [e.id for e in take(again, 5)] == ids[1:]
            finally:
                broker.close()

    @pytest.mark.integration
    def test_lost_redis_data_gives_live_clients_a_reset(self) -> None:
        """If Redis comes back empty, clients are told with a reset instead of silence."""
        with RedisServer() as server:
            broker = RedisBroker.from_url(server.url)
            try:
                with broker.subscribe(["a"]) as sub:
                    before = broker.publish("a", ServerSentEvent("before"))
                    take(sub, 1)
                    server.stop()
                    server.start()
                    wait_until(lambda: not raises_broker_error(broker), what="reconnection")
                    after = broker.publish("a", ServerSentEvent("after"))
                    events = take(sub, 1)
                    while events[-1].id != after:
                        events += take(sub, 1)
                    assert events[0].event == "reset"
                    assert json.loads(events[0].data)["last_event_id"] == before
            finally:
                broker.close()


def raises_broker_error(broker: RedisBroker) -> bool:
    try:
        broker.subscribe(["probe"]).close()
    except BrokerError:
        return True
    return False


class TestHealth:
    @pytest.mark.integration
    def test_ping_raises_broker_error_while_redis_server_is_stopped(self) -> None:
        """The error names the server and the fix, keeps the cause, and clears after a restart."""
        with RedisServer() as server:
            broker = RedisBroker.from_url(server.url)
            try:
                broker.ping()
                server.stop()
                with pytest.raises(BrokerError) as caught:
                    broker.ping()
                message = str(caught.value)
                assert f"127.0.0.1:{server.port}" in message
                assert "redis-server is running" in message
                assert isinstance(caught.value.__cause__, redis.ConnectionError)
                server.start()
                broker.ping()  # the pooled connection the stop broke is replaced
            finally:
                broker.close()

    @pytest.mark.integration
    def test_ping_gives_up_after_its_timeout(self, real: RedisBroker, inspector: Inspector) -> None:
        """A Redis that accepts but does not answer fails the ping in time, and the late
        PONG is never read as the reply to a later command."""
        real.ping()  # the pool now holds an open connection
        t.cast("t.Any", inspector).execute_command("CLIENT", "PAUSE", 1500, "ALL")
        with pytest.raises(BrokerError, match="no reply to PING within 0.2 s"):
            real.ping(timeout=0.2)
        real.ping(timeout=10.0)  # waits out the pause
        assert parse_id(real.publish("a", ServerSentEvent("x"))) is not None

    @pytest.mark.integration
    def test_reconnects_counts_a_killed_subscriber_connection(
        self, real: RedisBroker, inspector: Inspector
    ) -> None:
        """The count rises once the listener has its connection back, and delivery resumes."""
        with real.subscribe(["a"]) as sub:
            real.publish("a", ServerSentEvent("before"))
            take(sub, 1)
            assert real.reconnects == 0
            assert inspector.client_kill_filter(_type="pubsub") == 1
            wait_until(lambda: real.reconnects >= 1, what="the listener to reconnect")
            real.publish("a", ServerSentEvent("after"))
            assert [e.data for e in take(sub, 1)] == ["after"]
        assert real.reconnects == 1

    @pytest.mark.integration
    def test_reconnects_counts_a_restart_but_not_a_late_first_connection(self) -> None:
        """Connecting for the first time after Redis came up is no reconnect; a restart is."""
        with RedisServer() as server:
            server.stop()
            broker = RedisBroker.from_url(server.url)
            try:
                with pytest.raises(BrokerError):
                    broker.subscribe(["a"])
                server.start()
                wait_until(lambda: not raises_broker_error(broker), what="the first connection")
                assert broker.reconnects == 0
                server.stop()
                server.start()
                wait_until(lambda: broker.reconnects == 1, what="the listener to reconnect")
                with broker.subscribe(["a"]) as sub:
                    broker.publish("a", ServerSentEvent("after the restart"))
                    assert [e.data for e in take(sub, 1)] == ["after the restart"]
            finally:
                broker.close()


@pytest.mark.integration
class TestFork:
    def test_a_forked_child_gets_its_own_listener(self, real: RedisBroker) -> None:
        """A broker made (and used) before a fork works in the child, as in gunicorn --preload."""
        with real.subscribe(["a"]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child reports through its exit code
                code = 1
                try:
                    assert real.subscriber_count() == 0
                    with real.subscribe(["a"]) as sub:
                        real.publish("a", ServerSentEvent("in child"))
                        code = 0 if [e.data for e in take(sub, 1)] == ["in child"] else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert real.subscriber_count() == 1


class TestPublisher:
    @pytest.mark.integration
    def test_publishes_without_an_app(self, redis_server: RedisServer, real: RedisBroker) -> None:
        """Non-str data is JSON; the event reaches subscribers on the same prefix."""
        with real.subscribe(["orders"]) as sub:
            with Publisher(redis_server.url, prefix=real.prefix) as publisher:
                returned = publisher.publish({"id": 7}, event="created", channel="orders")
                publisher.publish("plain", id="mine", channel="orders")
            first, second = take(sub, 2)
        assert (first.data, first.event, first.id) == ('{"id": 7}', "created", returned)
        assert (second.data, second.id) == ("plain", "mine")

    @pytest.mark.integration
    def test_validates_before_sending(self, redis_server: RedisServer, prefix: str) -> None:
        """Bad input raises the same errors as SSEPush.publish, and nothing is stored."""
        with Publisher(redis_server.url, prefix=prefix) as publisher:
            with pytest.raises(ChannelError):
                publisher.publish("x", channel="no spaces")
            with pytest.raises(ValueError):
                publisher.publish("x", event="two\nlines")
            with pytest.raises(TypeError):
                publisher.publish("x", retry="soon")  # type: ignore[arg-type]
        client = redis_client(redis_server)
        try:
            assert client.keys(f"{prefix}*") == []
        finally:
            client.close()

    def test_package_imports_without_redis(self) -> None:
        """Redis is optional: the package imports, and names what to install when needed."""
        code = """
import sys
sys.modules["redis"] = None
import flask_sse_push
assert "Publisher" in flask_sse_push.__all__
try:
    flask_sse_push.RedisBroker
except ImportError as exc:
    assert "flask-sse-push[redis]" in str(exc), exc
else:
    raise SystemExit("RedisBroker imported without redis")
try:
    flask_sse_push.Publisher("redis://localhost")
except RuntimeError as exc:
    assert "flask-sse-push[redis]" in str(exc), exc
else:
    raise SystemExit("Publisher worked without redis")
"""
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
