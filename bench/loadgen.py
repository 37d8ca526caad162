"""The load generator: thousands of raw SSE client sockets in one epoll loop.

It is run by ``run.py`` as its own process on its own core, with one JSON
object of settings as its argument, and prints one JSON object of results.
It speaks just enough HTTP/1.1 to send a GET and check the status line, then
counts events in the raw body without decoding it: servers send whole events
per chunk, so chunked framing never falls inside the markers it counts.

The bench publishers put a marker at the start of every event's data:
``~W~`` warm-up, ``~R~<seq>~<unix ns>~`` a measured event, ``~E~<count>~`` the
end of a run with the number of measured events published.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import socket
import struct
import sys
import time
import typing as t

RECV_SIZE = 256 * 1024
#: Linux's SO_TIMESTAMPNS (asm-generic); the socket module does not export it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
#: Clients per loopback source address, well inside the ephemeral port range.
PER_SOURCE = 20000
LINGER_RESET = struct.pack("ii", 1, 0)

CONNECTING, HEAD, STREAM, CLOSED = 0, 1, 2, 3


def raise_nofile(wanted: int = 262144) -> int:
    """Raise this process's open-file limit as far as allowed; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(wanted, limit)), limit))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pids: list[int]) -> int:
    """Return the summed resident set size of ``pids`` (0 for a gone process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    """Return the CPU time (user + system) ``pids`` have used so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def http_get(host: str, port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """Send one blocking GET and return the status code and the whole raw response."""
    with socket.create_connection((host, port), timeout) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        raw = b"".join(chunks)
    try:
        status = int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    return status, raw


class Client:
    """One SSE connection and what it has received."""

    __slots__ = (
        "sock",
        "fd",
        "state",
        "head",
        "buf",
        "events",
        "warm",
        "keepalives",
        "end_total",
        "end_at",
        "t_start",
        "t_open",
        "t_start_ns",
        "t_open_ns",
        "t_body",
        "error",
        "sampled",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = CONNECTING
        self.head = b""
        self.buf = b""
        self.events = 0
        self.warm = 0
        self.keepalives = 0
        self.end_total = -1
        self.end_at = 0.0
        self.t_start = time.monotonic()
        self.t_open = 0.0
        self.t_start_ns = time.time_ns()
        self.t_open_ns = 0
        self.t_body = 0.0
        self.error = ""
        #: Its latencies are recorded (see :meth:`LoadGen.sample`).
        self.sampled = True


class LoadGen:
    """Open, read and close SSE client sockets for one scenario."""

    def __init__(self, config: dict[str, t.Any]) -> None:
        self.host: str = config.get("host", "127.0.0.1")
        self.port: int = config["port"]
        self.path: str = config.get("path", "/events")
        self.keepalive_marker: bytes = config.get("keepalive_marker", ": keepalive").encode()
        self.timestamps: bool = config.get("timestamps", False)
        self.src_base: int = config.get("src_base", 2)
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}
        self.closed: list[Client] = []
        #: Clients not yet as far as ``self.until`` asks.
        self.waiting: set[Client] = set()
        self.until = "open"
        self.started = 0
        self.latencies: list[int] = []
        #: Per measured event (by its number): the latency of the slowest timed
        #: client, i.e. how long the server's fan-out took to reach them all.
        self.slowest: dict[int, int] = {}
        #: Clients read round-robin, a slice per loop turn, instead of via epoll.
        self.bulk: list[Client] = []
        self.bulk_at = 0
        self.request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n\r\n"
        ).encode()

    # -- connections ---------------------------------------------------------

    def _source(self, index: int) -> str:
        octet = self.src_base + index // PER_SOURCE
        if octet > 254:
            raise RuntimeError("ran out of 127.0.0.x source addresses; lower --src-base")
        return f"127.0.0.{octet}"

    def open_one(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Port chosen at connect time, per destination: so each 127.0.0.x source
        # gets the whole ephemeral range, which is how 50k clients fit.
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((self._source(self.started), 0))
        if self.timestamps:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        client = Client(sock)
        self.started += 1
        self.clients[client.fd] = client
        self.waiting.add(client)
        code = sock.connect_ex((self.host, self.port))
        if code in (0, errno.EINPROGRESS):
            self.epoll.register(client.fd, select.EPOLLOUT)
        else:
            self.fail(client, f"connect: {errno.errorcode.get(code, code)}", registered=False)

    def fail(self, client: Client, reason: str, *, registered: bool = True) -> None:
        client.error = client.error or reason
        self.close(client, registered=registered)

    def close(self, client: Client, *, registered: bool = True) -> None:
        if client.state == CLOSED:
            return
        client.state = CLOSED
        self.waiting.discard(client)
        if registered:
            try:
                self.epoll.unregister(client.fd)
            except (OSError, ValueError):
                pass
        self.clients.pop(client.fd, None)
        self.closed.append(client)
        try:
            # A reset, not a FIN: no TIME_WAIT left to hold the port.
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass
        client.sock.close()

    def close_all(self) -> None:
        for client in list(self.clients.values()):
            self.close(client)

    # -- the loop ------------------------------------------------------------

    def sample(self, clients: list[Client], every: int) -> None:
        """Time only every ``every``-th of ``clients``; read the rest in the background.

        One process reading 1,000 sockets, each with its own event every 10 ms,
        falls behind, and then reads several events at once: they all get the
        kernel arrival time of the last one, which inflates their latency. So
        only a spread-out sample (every ``every``-th client in connection
        order, including the last one, which the servers write to last) is
        read the moment data arrives. The others are drained in small slices
        between polls and still counted, for loss.
        """
        for index, client in enumerate(clients):
            client.sampled = (len(clients) - 1 - index) % every == 0
            if not client.sampled and client.state == STREAM:
                self.epoll.modify(client.fd, 0)
                self.bulk.append(client)

    def unsample(self) -> None:
        """Read every client via epoll again."""
        for client in self.bulk:
            if client.state != CLOSED:
                self.epoll.modify(client.fd, select.EPOLLIN)
        self.bulk = []

    def pump(self, timeout: float) -> None:
        """Handle every ready socket once, waiting up to ``timeout`` seconds."""
        clients = self.clients
        bulk = self.bulk
        if bulk:
            # Visit each background client every 50 turns or so.
            share = max(1, len(bulk) // 50)
            for _ in range(share):
                client = bulk[self.bulk_at % len(bulk)]
                self.bulk_at += 1
                if client.state == STREAM:
                    self._readable(client)
            timeout = min(timeout, 0.001)
        for fd, mask in self.epoll.poll(timeout, 4096):
            client = clients.get(fd)
            if client is None:
                continue
            if client.state == CONNECTING:
                self._connected(client)
            elif mask & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                self._readable(client)

    def _connected(self, client: Client) -> None:
        err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(client, f"connect: {errno.errorcode.get(err, err)}")
            return
        try:
            client.sock.send(self.request)
        except OSError as exc:
            self.fail(client, f"send: {exc.__class__.__name__}")
            return
        client.state = HEAD
        self.epoll.modify(client.fd, select.EPOLLIN)
        if self.until == "sent":
            self.waiting.discard(client)

    def _readable(self, client: Client) -> None:
        stamp = 0
        try:
            if self.timestamps and client.sampled:
                data, ancillary, _, _ = client.sock.recvmsg(RECV_SIZE, 64)
                for level, kind, payload in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        seconds, nanos = struct.unpack("qq", payload[:16])
                        stamp = seconds * 1_000_000_000 + nanos
            else:
                data = client.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(client, f"recv: {exc.__class__.__name__}")
            return
        if not data:
            self.fail(client, "closed by server" if client.state == STREAM else "eof in headers")
            return
        if client.state == HEAD:
            head = client.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                if len(head) > 16384:
                    self.fail(client, "headers too long")
                else:
                    client.head = head
                return
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                self.fail(client, "status " + head.split(b"\r\n", 1)[0].decode("latin-1"))
                return
            client.head = b""
            client.state = STREAM
            client.t_open = time.monotonic()
            # The kernel's arrival time, so a busy load generator adds no delay.
            client.t_open_ns = stamp or time.time_ns()
            if self.until != "body":
                self.waiting.discard(client)
            data = head[end + 4 :]
        if data and not client.t_body:
            client.t_body = time.monotonic()
            self.waiting.discard(client)
        buf = client.buf + data if client.buf else data
        # Events end with a blank line: LF LF, or CR LF CR LF (sse-starlette).
        cut = buf.rfind(b"\n\n")
        crlf = buf.rfind(b"\r\n\r\n")
        if crlf >= 0 and crlf + 2 > cut:
            cut = crlf + 2
        if cut < 0:
            client.buf = buf
            return
        client.buf = buf[cut + 2 :]
        measured = buf.count(b"~R~", 0, cut)
        if measured:
            client.events += measured
            if self.timestamps and client.sampled:
                self._latencies(buf[:cut], stamp or time.time_ns())
        if buf.find(b"~W~", 0, cut) >= 0:
            client.warm += buf.count(b"~W~", 0, cut)
        end_at = buf.find(b"~E~", 0, cut)
        if end_at >= 0:
            digits = buf[end_at + 3 : buf.index(b"~", end_at + 3)]
            client.end_total = int(digits)
            client.end_at = time.monotonic()
        if buf.find(self.keepalive_marker, 0, cut) >= 0:
            client.keepalives += buf.count(self.keepalive_marker, 0, cut)

    def _latencies(self, body: bytes, received_ns: int) -> None:
        append = self.latencies.append
        slowest = self.slowest
        for part in body.split(b"~R~")[1:]:
            fields = part.split(b"~", 2)
            latency = received_ns - int(fields[1])
            append(latency)
            seq = int(fields[0])
            if latency > slowest.get(seq, 0):
                slowest[seq] = latency

    # -- phases --------------------------------------------------------------

    def connect(self, count: int, *, concurrency: int, timeout: float, until: str) -> float:
        """Open ``count`` more clients; return the seconds it took.

        Each counts as connected once its request is ``"sent"``, once the server
        answered with a status line (``"open"``), or once the first ``"body"``
        bytes came: some servers send nothing before the first event.
        """
        began = time.monotonic()
        deadline = began + timeout
        target = self.started + count
        self.until = until
        while time.monotonic() < deadline:
            while self.started < target and len(self.waiting) < concurrency:
                self.open_one()
            if self.started >= target and not self.waiting:
                break
            self.pump(0.05)
        for client in list(self.waiting):
            self.fail(client, "not open in time")
        return time.monotonic() - began

    def streaming(self) -> list[Client]:
        return [c for c in self.clients.values() if c.state == STREAM]

    def live(self) -> list[Client]:
        return [c for c in self.clients.values() if c.state in (HEAD, STREAM)]

    def wait(self, seconds: float, until: t.Callable[[], bool] | None = None) -> bool:
        """Run the loop for up to ``seconds``; stop early once ``until()`` is true."""
        deadline = time.monotonic() + seconds
        while True:
            if until is not None and until():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return until is None
            self.pump(min(left, 0.05))

    def warm_up(self, warm_path: str, timeout: float) -> bool:
        """Publish warm-up events until every open client has seen one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                http_get(self.host, self.port, warm_path, timeout=10)
            except OSError:
                pass
            if self.wait(0.3, lambda: all(c.warm for c in self.live())):
                # Let stragglers of the last warm-up events arrive before measuring.
                self.wait(0.2)
                return True
        return False

    def errors(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for client in self.closed:
            if client.error:
                counts[client.error] = counts.get(client.error, 0) + 1
        return counts


def phase(name: str) -> None:
    """Tell the harness (reading stderr) that a phase began, e.g. to start a profiler."""
    print(f"phase {name}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_fanout(gen: LoadGen, config: dict[str, t.Any]) -> dict[str, t.Any]:
    """Broadcast and latency: N clients, one publisher run, count what arrives."""
    clients = int(config["clients"])
    connect_s = gen.connect(
        clients, concurrency=config.get("concurrency", 250), timeout=120, until="sent"
    )
    if not gen.warm_up(config["warm_path"], timeout=60):
        return {"ok": False, "why": "warm-up events did not reach every client", **_common(gen)}
    live = gen.live()
    gen.latencies.clear()
    gen.slowest.clear()
    every = int(config.get("sample_every", 1))
    if gen.timestamps and every > 1:
        gen.sample(live, every)
    status, _ = http_get(gen.host, gen.port, config["run_path"])
    if status != 200:
        return {"ok": False, "why": f"run trigger answered {status}", **_common(gen)}
    began = time.monotonic()
    pids = [int(pid) for pid in config.get("server_pids", [])]
    server_cpu, own_cpu = cpu_seconds(pids), own_cpu_seconds()
    phase("run")
    budget = float(config["duration"]) + float(config.get("drain", 30))
    gen.wait(budget, lambda: all(c.end_total >= 0 or c.state == CLOSED for c in live))
    gen.unsample()
    published = max((c.end_total for c in live), default=-1)
    delivered = sum(c.events for c in live)
    finished = [c.end_at for c in live if c.end_total >= 0]
    elapsed = (max(finished) if finished else time.monotonic()) - began
    server_cpu = cpu_seconds(pids) - server_cpu
    own_cpu = own_cpu_seconds() - own_cpu
    wall = time.monotonic() - began
    expected = published * len(live) if published > 0 else 0
    result: dict[str, t.Any] = {
        "ok": published > 0,
        "why": "" if published > 0 else "no client saw the end of the run",
        "connect_s": connect_s,
        "clients": len(live),
        "published": published,
        "delivered": delivered,
        "expected": expected,
        "lost": max(0, expected - delivered),
        "ended_early": sum(1 for c in live if c.state == CLOSED),
        "elapsed_s": elapsed,
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else 0.0,
        "events_per_s": published / elapsed if elapsed > 0 and published > 0 else 0.0,
        # Busy fractions of one core: a load generator near 1.0 would be the bottleneck.
        "server_cpu": server_cpu / wall / max(1, len(pids)),
        "loadgen_cpu": own_cpu / wall,
        **_common(gen),
    }
    if gen.timestamps:
        lat_ms = [value / 1e6 for value in gen.latencies]
        result.update(
            sampled_clients=sum(1 for c in live if c.sampled),
            samples=len(lat_ms),
            p50_ms=percentile(lat_ms, 0.50),
            p99_ms=percentile(lat_ms, 0.99),
            max_ms=max(lat_ms, default=0.0),
            # The typical event's time to its last timed client: the fan-out's
            # own cost, where p99 mostly catches the machine's slow spells.
            fanout_ms=percentile([value / 1e6 for value in gen.slowest.values()], 0.50),
        )
    return result


def run_idle(gen: LoadGen, config: dict[str, t.Any]) -> dict[str, t.Any]:
    """Idle scale: step up the open streams, measure RSS and that keepalives flow."""
    pids = [int(pid) for pid in config["rss_pids"]]
    keepalive = float(config["keepalive"])
    settle = float(config.get("settle", 1.0))
    # A few streams first, so lazy imports and first-request work are in the base.
    gen.connect(20, concurrency=20, timeout=30, until="body")
    gen.wait(settle)
    gen.close_all()
    gen.wait(settle)
    base = rss_bytes(pids)
    steps = []
    for target in config["steps"]:
        have = len(gen.streaming())
        seconds = gen.connect(
            max(0, target - have),
            concurrency=config.get("concurrency", 1000),
            timeout=float(config.get("step_timeout", 180)),
            until="body",
        )
        gen.wait(settle)
        rss = rss_bytes(pids)
        live = gen.streaming()
        before = {c.fd: c.keepalives for c in live}
        gen.wait(keepalive * 2 + max(0.5, settle))
        kept = sum(1 for c in live if c.state == STREAM and c.keepalives > before[c.fd])
        steps.append(
            {
                "target": target,
                "open": len(live),
                "connect_s": seconds,
                "rss": rss,
                "per_conn": (rss - base) / len(live) if live else 0.0,
                "kept": kept,
            }
        )
    return {
        "ok": True,
        "why": "",
        "base_rss": base,
        "steps": steps,
        "unreachable": config.get("unreachable", []),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        **_common(gen),
    }


def run_storm(gen: LoadGen, config: dict[str, t.Any]) -> dict[str, t.Any]:
    """Connect storm: every client connects at once; time until each is open."""
    if config.get("ticker_path"):
        status, _ = http_get(gen.host, gen.port, config["ticker_path"])
        if status != 200:
            return {"ok": False, "why": f"ticker trigger answered {status}", **_common(gen)}
    clients = int(config["clients"])
    gen.timestamps = True
    began = time.time_ns()
    gen.connect(
        clients, concurrency=clients, timeout=float(config.get("timeout", 60)), until="open"
    )
    everyone = list(gen.clients.values()) + gen.closed
    opened = [(c.t_open_ns - c.t_start_ns) / 1e9 for c in everyone if c.t_open_ns]
    last = max((c.t_open_ns for c in everyone if c.t_open_ns), default=time.time_ns())
    all_open = (last - began) / 1e9
    failed = clients - len(opened)
    return {
        "ok": True,
        "why": "",
        "clients": clients,
        "opened": len(opened),
        "failed": failed,
        "all_open_s": all_open,
        "p50_ms": percentile(opened, 0.50) * 1000,
        "p99_ms": percentile(opened, 0.99) * 1000,
        **_common(gen),
    }


def _common(gen: LoadGen) -> dict[str, t.Any]:
    return {"errors": gen.errors(), "started": gen.started}


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    raise_nofile()
    gen = LoadGen(config)
    try:
        mode = config["mode"]
        if mode in ("broadcast", "latency"):
            result = run_fanout(gen, config)
        elif mode == "idle":
            result = run_idle(gen, config)
        elif mode == "storm":
            result = run_storm(gen, config)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        gen.close_all()
        gen.epoll.close()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
