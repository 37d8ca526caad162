"""The pluggable source interface: :class:`Broker` and :class:`Subscription`.

A broker fans published events out to subscriptions and keeps enough history to
resume a client from its ``Last-Event-ID``. The in-memory broker and the Redis
broker implement the same contract, and so can an application's own broker.
"""

from __future__ import annotations

import abc
import json
import typing as t

# RESET_EVENT lives with the event type (the fast path reads it there too);
# re-exported here, where brokers and the stream have always taken it.
from ..event import RESET_EVENT as RESET_EVENT
from ..event import ServerSentEvent

if t.TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from .handoff import Consumer
    from .records import WorkerRecords

_S = t.TypeVar("_S", bound="Subscription")


def reset_event(last_event_id: str, head_id: str, reason: str) -> ServerSentEvent:
    """Build the ``reset`` event that tells a client it missed events.

    Its id is the newest id the broker knows, so the client's next reconnect
    resumes from here instead of getting another reset.

    :param reason: ``"unknown"`` when the broker never issued the id or cannot
        show it still holds what followed it (a restart from an older
        snapshot), ``"expired"`` when the events after it have left the
        history, ``"budget"`` when the replay was cut at its budget (the events
        before this one are the start of what was missed).
    """
    data = json.dumps({"last_event_id": last_event_id, "reason": reason})
    return ServerSentEvent(data, event=RESET_EVENT, id=head_id)


class Subscription(abc.ABC):
    """A stream of events for one client, from one or more channels.

    Use it as a context manager, or call :meth:`close` when the client leaves.

    .. versionadded:: 0.1
    """

    #: For a subscription made without a cursor: the broker's cursor for its
    #: channels when it subscribed (what :meth:`Broker.cursor` would have
    #: returned), or ``None``. The stream sends it as ``id:`` before any event,
    #: so a client whose stream ends before its first event (lifetime, shutdown,
    #: a dropped connection) still comes back with a cursor and misses nothing
    #: published while it was away.
    start_id: str | None = None

    @abc.abstractmethod
    def get(self, timeout: float | None = None) -> list[ServerSentEvent]:
        """Wait up to ``timeout`` seconds and return every event that is ready.

        Replayed events come first, in id order, then live ones. An empty list
        means the timeout passed with nothing to send, so a keepalive is due.

        :raises SubscriptionClosed: the source ended this subscription.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the subscription. Calling it again does nothing."""

    def pending(self) -> int:
        """Return how many events wait to be sent: the client's lag, for stats."""
        return 0

    def set_consumer(self, consumer: Consumer | None) -> bool:
        """Hand events to ``consumer`` while the reader waits in :meth:`get`.

        Optional. A subscription that supports it no longer wakes a waiting
        reader for new events: it asks ``consumer`` to defer a job until the
        publisher yields, and that job gives the ready events to
        :meth:`~flask_sse_push.brokers.handoff.Consumer.take`. Only when
        ``take`` returns False does the reader wake up (``get`` returning
        ``[]``), to finish what the consumer started. A reader that is not
        waiting gets its events from ``get`` as usual. ``None`` turns it off.

        :returns: whether the subscription supports this; the default does not.
        """
        return False

    #: Whether :meth:`park` is supported; the default subscription does not.
    parks: t.ClassVar[bool] = False

    def park(self, wake: Callable[[], None]) -> bool:
        """Wait without a reader, for a stream that keeps no greenlet or thread.

        Optional, and only with a consumer (:meth:`set_consumer`): the consumer
        takes events as they come, as it does while a reader waits in
        :meth:`get`. Where a waiting reader would be woken (the consumer took only
        part of a batch or could not be deferred, or the subscription ended),
        ``wake()`` is called instead, once, from any thread and possibly under
        the broker's lock, so it must only schedule the reader's return. The
        next :meth:`get` (with a timeout of 0) ends the park.

        :returns: False if something is ready already (call ``get(0)``), or
            parking is not supported (:attr:`parks`).
        """
        return False

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Broker(abc.ABC):
    """Fan-out from publishers to subscriptions, with a bounded history.

    .. versionadded:: 0.1
    """

    @abc.abstractmethod
    def publish(self, channel: str, event: ServerSentEvent) -> str:
        """Deliver ``event`` to every subscription of ``channel`` and return its id.

        If ``event.id`` is ``None`` the broker assigns a monotonic id; otherwise
        the given id is kept, sent as the SSE id, and accepted as a resume cursor.

        :raises BrokerError: the backend could not take the event.
        """

    @abc.abstractmethod
    def subscribe(
        self, channels: Sequence[str], *, last_event_id: str | None = None
    ) -> Subscription:
        """Subscribe to ``channels``, replaying the events after ``last_event_id``.

        The replay and the switch to live events are atomic: no event is lost
        or repeated between them. A cursor that cannot be resumed gives a
        ``reset`` event first (see :func:`~flask_sse_push.brokers.base.reset_event`).

        :raises BrokerError: the backend cannot be reached.
        """

    @abc.abstractmethod
    def cursor(self, channels: Sequence[str]) -> str:
        """Return an id that, used as ``last_event_id``, resumes from now.

        Render it into a page so the first connection misses nothing published
        between the page load and the ``EventSource`` connecting.
        """

    @abc.abstractmethod
    def subscriber_count(self) -> int:
        """Return how many subscriptions are open in this process."""

    def ping(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Check that the backend is reachable; used by the health endpoint.

        :raises BrokerError: it is not, with the reason in the message.
        """

    def check(self) -> None:
        """Check that the backend is reachable and lets this process do its work:
        publish, subscribe and replay with its credentials. Used by the health
        endpoint and once when a worker starts; by default, :meth:`ping`.

        :raises BrokerError: it cannot, with the reason (and what to change) in
            the message. The message may name hosts and users: it is for the
            log and :meth:`SSEPush.stats`, not for clients.

        .. versionadded:: 0.1
        """
        self.ping()

    #: How often this process lost its backend connection and re-established it.
    reconnects: int = 0
    #: How many messages on the broker's own channels this process dropped,
    #: because no publish made them (malformed, or naming an entry its stream lacks).
    rejected_messages: int = 0

    #: True when only this process can reach the broker's subscribers (the
    #: in-process broker): revokes, presence and deployment stats then need no
    #: messages between workers, and the runtime starts no control thread.
    process_local: bool = False

    def worker_records(self) -> WorkerRecords | None:
        """Where the workers sharing this broker keep their presence and stats.

        Optional. ``None`` (the default): :meth:`SSEPush.presence` and
        ``SSEPush.stats(scope="deployment")`` then answer for this process only.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the broker's resources. Open subscriptions end."""
