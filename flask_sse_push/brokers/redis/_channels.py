"""What both Redis listeners keep per channel: its subscriptions, and who waits for Redis.

A listener (:mod:`.standalone._listener`, :mod:`.cluster._listener`) reference-counts
channels: the first local subscription of a channel subscribes it on Redis, the
last one to leave unsubscribes it. Where each does that is its own part; the
table of channels and subscriptions, the waiters for Redis' confirmations and
the reconnection backoff are shared here, the subscriber connection in
:mod:`._subscriber`.
"""

from __future__ import annotations

import os
import random
import threading
import typing as t


class Waiter:
    """Callers waiting for Redis to confirm ``count`` subscribe commands."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.failed = False
        self.done = threading.Event()
        if count <= 0:
            self.done.set()

    def confirm(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()

    def fail(self) -> None:
        self.failed = True
        self.done.set()


def confirm_waiters(waiters: list[tuple[int, Waiter]], acked: int) -> list[tuple[int, Waiter]]:
    """Confirm the waiters whose target confirmation ``acked`` reached; return the others.

    A waiter's target counts the subscribe commands of its channel on its
    connection: Redis confirms them in the order they were sent.
    """
    waiting = []
    for target, waiter in waiters:
        if target <= acked:
            waiter.confirm()
        else:
            waiting.append((target, waiter))
    return waiting


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

    def _backoff(self, failures: int) -> float:
        """Seconds to wait before reconnection attempt ``failures + 1``.

        Jittered, so that workers that lost the same server do not all come
        back at once.
        """
        delay = min(self.backoff_min * 2.0 ** min(failures - 1, 10), self.backoff_max)
        return delay * random.uniform(0.8, 1.2)

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
