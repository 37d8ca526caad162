"""A real Redis Cluster on 127.0.0.1 for the cluster broker's tests.

:class:`RedisCluster` starts one ``redis-server --cluster-enabled yes`` per node,
joins them with ``redis-cli --cluster create`` and waits until every node
reports ``cluster_state:ok``. The fixtures
(``redis_cluster``, ``failover_cluster``) live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

import redis

from tests.support.servers import missing, redis_server_path, stop, wait_for_port

if t.TYPE_CHECKING:
    pass

#: A client whose replies are ``str`` (see tests.support.redis_helpers.Inspector).
NodeClient: t.TypeAlias = t.Any


def cluster_port() -> int:
    """A free port whose cluster bus port (10,000 above) is free and valid too."""
    for _ in range(1000):
        port = random.randint(20000, 40000)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("found no free port pair for a Redis Cluster node")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisCluster:
    """``masters`` masters, each with ``replicas`` replicas, all on 127.0.0.1.

    Failover is quick on purpose (``cluster-node-timeout`` of ``node_timeout_ms``),
    so a test that kills a master sees its replica promoted within about a second.
    """

    def __init__(self, masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = 1000):
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.ports = [cluster_port() for _ in range(masters * (1 + replicas))]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        #: Seconds from the first redis-server start to cluster_state:ok everywhere.
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        """The broker URL: every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start_node(self, port: int) -> None:
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        args = [
            redis_server_path(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(node_dir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica with any lag may take over: the tests kill masters under load.
            "--cluster-replica-validity-factor", "0",
            "--save", "",
            "--appendonly", "no",
            "--maxclients", "10000",
        ]  # fmt: skip
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes[port] = process
        wait_for_port(port, process)

    def start(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            missing("redis-cli (apt-get install redis-tools)")
        began = time.monotonic()
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{port}" for port in self.ports],
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],  # fmt: skip
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self.wait_ok(timeout=30.0)
        self.startup_seconds = time.monotonic() - began

    def node(self, port: int) -> NodeClient:
        """A plain client of one node; the caller closes it."""
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True)

    def alive_ports(self) -> list[int]:
        return [port for port, proc in self.processes.items() if proc.poll() is None]

    def master_ports(self) -> list[int]:
        """The ports of the live nodes that serve slots as masters now."""
        found = []
        for port in self.alive_ports():
            with contextlib.closing(self.node(port)) as client:
                with contextlib.suppress(redis.RedisError):
                    role = client.execute_command("ROLE")
                    if role[0] == "master":
                        found.append(port)
        owners = {int(row[2][1]) for row in self.slots()}
        return sorted(port for port in found if port in owners)

    def slots(self) -> list[t.Any]:
        """``CLUSTER SLOTS`` as a live node sees it."""
        for port in self.alive_ports():
            with contextlib.closing(self.node(port)) as client:
                with contextlib.suppress(redis.RedisError):
                    return list(client.execute_command("CLUSTER SLOTS"))
        raise RuntimeError("no Redis Cluster node answers")

    def owner_port(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot now."""
        port = self.alive_ports()[0]
        with contextlib.closing(self.node(port)) as client:
            slot = int(client.execute_command("CLUSTER KEYSLOT", key))
        for start, end, master, *_ in self.slots():
            if start <= slot <= end:
                return int(master[1])
        raise AssertionError(f"no node serves the slot of {key!r}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says ``cluster_state:ok`` and agrees on the masters."""
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for port in self.alive_ports():
                with contextlib.closing(self.node(port)) as client:
                    try:
                        # redis-py parses the reply into a dict.
                        info = client.execute_command("CLUSTER INFO")
                    except redis.RedisError:
                        info = {}
                    states.append(info.get("cluster_state") == "ok")
            if states and all(states) and self._replicas_synced():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster not ok after {timeout} s: {states}")
            time.sleep(0.05)

    def _replicas_synced(self) -> bool:
        """Whether every live replica has finished its sync with its master."""
        for port in self.alive_ports():
            with contextlib.closing(self.node(port)) as client:
                try:
                    info = client.info("replication")
                except redis.RedisError:
                    return False
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return False
        return True

    def kill(self, port: int) -> None:
        """``kill -9`` one node."""
        process = self.processes[port]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            stop(process)
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def migrate_slot(cluster: RedisCluster, key: str, target_port: int) -> None:
    """Move ``key``'s slot, with its keys, to the master on ``target_port``."""
    source_port = cluster.owner_port(key)
    source, target = cluster.node(source_port), cluster.node(target_port)
    try:
        slot = int(source.execute_command("CLUSTER KEYSLOT", key))
        source_id = source.execute_command("CLUSTER MYID")
        target_id = target.execute_command("CLUSTER MYID")
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while names := source.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", *names)
        for port in cluster.master_ports():
            node = cluster.node(port)
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
            node.close()
    finally:
        source.close()
        target.close()
