"""What the Redis and the Redis Cluster brokers do alike, apart from Redis itself.

Both keep one listener per process (:class:`ProcessListener`), open a
subscription the same way (:func:`open_subscription`: attach, wait for Redis to
confirm, replay, go live, and undo it all on failure), and pass a publish
script the same arguments (:func:`publish_args`).
"""

from __future__ import annotations

import os
import threading
import typing as t

from ...exceptions import SubscriptionClosed

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from ...event import ServerSentEvent
    from ...exceptions import BrokerError
    from ._subscriber import Waiter


def check_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """:raises ValueError: no channel is named."""
    if not names:
        raise ValueError("subscribe() needs at least one channel name.")
    return names


def check_sizes(broker: str, history: int, queue_size: int) -> None:
    """:raises ValueError: ``history`` or ``queue_size`` is below 1."""
    if history < 1 or queue_size < 1:
        raise ValueError(
            f"{broker} needs history >= 1 and queue_size >= 1"
            f" (got history={history}, queue_size={queue_size})."
        )


def publish_args(
    channel: str, history: int, message: str, event: ServerSentEvent, fields: list[str]
) -> list[t.Any]:
    """ARGV of both publish scripts (see :data:`._scripts.LUA_PUBLISH_HELPERS`)."""
    return [
        channel,
        history,
        message,
        "0" if event.id is None else "1",
        event.id or "",
        *fields,
    ]


class Attachable(t.Protocol):
    """The listener's side a broker needs."""

    pid: int
    count: int
    error: str

    @property
    def closed(self) -> bool: ...

    def attach(self, sub: t.Any) -> Waiter | None: ...

    def detach(self, sub: t.Any) -> None: ...

    def close(self) -> None: ...


_L = t.TypeVar("_L", bound=Attachable)


class ProcessListener(t.Generic[_L]):
    """The listener of this process, made on first use, and again after a fork or close.

    After a fork the parent's thread and connections are not the child's.
    """

    def __init__(self, make: Callable[[], _L]) -> None:
        self._make = make
        self._lock = threading.Lock()
        #: The listener made last, possibly by another process (before a fork).
        self.current: _L | None = None

    def get(self) -> _L:
        """This process' listener, made if there is none."""
        listener = self.current
        if listener is None or listener.pid != os.getpid() or listener.closed:
            with self._lock:
                listener = self.current
                if listener is None or listener.pid != os.getpid() or listener.closed:
                    listener = self.current = self._make()
        return listener

    def count(self) -> int:
        """The subscriptions open in this process."""
        listener = self.current
        if listener is None or listener.pid != os.getpid():
            return 0
        return listener.count

    def close(self) -> None:
        """Close this process' listener, if it has one."""
        listener = self.current
        if listener is not None and listener.pid == os.getpid():
            listener.close()


class Startable(t.Protocol):
    """The subscription's side :func:`open_subscription` needs."""

    def finish(self, reason: SubscriptionClosed) -> bool: ...


_S = t.TypeVar("_S", bound=Startable)


def open_subscription(
    listener: Attachable,
    sub: _S,
    start: Callable[[], bool],
    timeout: float,
    unconfirmed: Callable[[str], BrokerError],
) -> _S:
    """Attach ``sub``, wait for Redis to confirm its channels, then ``start`` it.

    :param start: queues the replay and switches ``sub`` to live events;
        returns False if the client overflowed meanwhile (``sub`` then ends).
    :param timeout: seconds to wait for the confirmation.
    :param unconfirmed: the error for a subscription Redis did not confirm,
        given the listener's last error.
    :raises BrokerError: Redis could not be reached or did not confirm in time.
        Whatever fails, ``sub`` is ended and detached.
    """
    try:
        waiter = listener.attach(sub)
        if waiter is not None and (not waiter.done.wait(timeout) or waiter.failed):
            raise unconfirmed(listener.error)
        ok = start()
    except BaseException:
        sub.finish(SubscriptionClosed("failed", reconnect=False))
        listener.detach(sub)
        raise
    if not ok:
        listener.detach(sub)
    return sub
