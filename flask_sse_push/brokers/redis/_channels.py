"""What both Redis listeners share: the table of channels, and subscribing them.

A listener (:mod:`.standalone._listener`, :mod:`.cluster._listener`) reference-counts
channels: the first local subscription of a channel subscribes it on Redis, on
the connection (:mod:`._subscriber`) the listener picks for it, and the last one
to leave unsubscribes it. Connecting, and recovering from a broken connection,
are each listener's own part.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import typing as t

import redis

from ._subscriber import Waiter

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from ._subscriber import Subscriber

logger = logging.getLogger("flask_sse_push")

#: The system's generator, which keeps no state: backoff jitter never moves the
#: app's seeded ``random``.
_JITTER = random.SystemRandom()


class Member(t.Protocol):
    """The subscription's side the table needs."""

    channels: tuple[str, ...]
    attached: bool


_S = t.TypeVar("_S", bound=Member)


class Channel(t.Generic[_S]):
    """A listener's view of one channel: the local subscriptions that want it."""

    __slots__ = ("subs",)

    def __init__(self) -> None:
        self.subs: tuple[_S, ...] = ()


_C = t.TypeVar("_C", bound="Channel[t.Any]")


class ListenerBase(t.Generic[_S, _C]):
    """The channels a listener serves, and how many subscriptions are attached.

    The methods that touch them are called holding :attr:`lock`.
    """

    #: Whether it was closed for good, so the broker makes a new one (the
    #: cluster's); the single-node listener goes back to idle instead.
    closed = False
    #: Reconnection delays, in seconds (doubling, with jitter): set by each listener.
    backoff_min: float
    backoff_max: float

    def __init__(self) -> None:
        self.pid = os.getpid()  # after a fork, the broker makes a new listener
        self.lock = threading.Lock()
        self.channels: dict[str, _C] = {}
        self.count = 0

    def _new_channel(self) -> _C:
        raise NotImplementedError

    def _connection(self, name: str, channel: _C, *, route: bool = False) -> Subscriber | None:
        """The connection ``channel`` is subscribed on; with ``route``, picked if none."""
        raise NotImplementedError

    def _subscribe(self, names: Iterable[str]) -> Waiter:
        """Subscribe ``names`` where not yet; the caller holds the lock.

        The waiter is done when Redis confirmed each of them.

        :raises redis.ConnectionError: a connection is closed.
        """
        targets = []
        fresh: dict[Subscriber, list[str]] = {}
        for name in names:
            conn = self._connection(name, self.channels[name], route=True)
            assert conn is not None  # routed
            if conn.open and not conn.subscribed(name):
                fresh.setdefault(conn, []).append(name)
            targets.append((conn, name))
        for conn, batch in fresh.items():
            conn.send(batch)
        waiter = Waiter(len(targets))
        for conn, name in targets:
            conn.expect(name, waiter)
        return waiter

    def detach(self, sub: _S) -> None:
        """Unregister ``sub``; unsubscribe the channels nobody here wants any more."""
        with self.lock:
            gone: dict[Subscriber, list[str]] = {}
            for name, channel in self._leave(sub):
                conn = self._connection(name, channel)
                if conn is not None and conn.open and conn.subscribed(name):
                    gone.setdefault(conn, []).append(name)
            for conn, names in gone.items():
                try:
                    conn.send(names, subscribe=False)
                except (redis.RedisError, OSError) as exc:
                    # The connection's thread finds it broken too, and recovers.
                    logger.debug("Could not unsubscribe on %s: %s", conn.backend, exc)

    def _backoff(self, failures: int) -> float:
        """Seconds to wait before reconnection attempt ``failures + 1``.

        Jittered, so that workers that lost the same server do not all come
        back at once.
        """
        delay = min(self.backoff_min * 2.0 ** min(failures - 1, 10), self.backoff_max)
        return delay * _JITTER.uniform(0.8, 1.2)

    def _join(self, sub: _S) -> list[tuple[str, _C]]:
        """Add ``sub`` to each of its channels, made if new; return them."""
        sub.attached = True
        self.count += 1
        joined = []
        for name in sub.channels:
            channel = self.channels.get(name)
            if channel is None:
                channel = self.channels[name] = self._new_channel()
            channel.subs = (*channel.subs, sub)
            joined.append((name, channel))
        return joined

    def _leave(self, sub: _S) -> list[tuple[str, _C]]:
        """Remove ``sub`` from its channels; drop and return those nobody here wants now.

        Nothing, if ``sub`` had left already.
        """
        if not sub.attached:
            return []
        sub.attached = False
        self.count -= 1
        emptied = []
        for name in sub.channels:
            channel = self.channels.get(name)
            if channel is None:
                continue
            channel.subs = tuple(s for s in channel.subs if s is not sub)
            if not channel.subs:
                del self.channels[name]
                emptied.append((name, channel))
        return emptied

    def _leave_all(self) -> list[_S]:
        """Forget every channel and subscription (at shutdown); return the subscriptions."""
        subs = {id(s): s for c in self.channels.values() for s in c.subs}
        for sub in subs.values():
            sub.attached = False
        self.channels.clear()
        self.count = 0
        return list(subs.values())
