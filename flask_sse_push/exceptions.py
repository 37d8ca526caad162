"""Exceptions raised by :mod:`flask_sse_push`.

The hierarchy::

    SSEPushError
    ├── BrokerError            the message broker failed or cannot be reached
    ├── ChannelError           a channel name is not allowed (also a ValueError)
    ├── LastEventIDError       a ``Last-Event-ID`` cursor is malformed (also a ValueError)
    └── SubscriptionClosed     the source ended a subscription (overflow, revoke, end)
"""

from __future__ import annotations


class SSEPushError(Exception):
    """Base class for every error this package raises on purpose.

    .. versionadded:: 0.1
    """


class BrokerError(SSEPushError):
    """The broker could not publish or subscribe.

    The original exception is chained as ``__cause__``.

    .. versionadded:: 0.1
    """


class ChannelError(SSEPushError, ValueError):
    """A channel name does not match ``[A-Za-z0-9_.:-]{1,128}``.

    .. versionadded:: 0.1
    """


class LastEventIDError(SSEPushError, ValueError):
    """A ``Last-Event-ID`` header or ``last_event_id`` parameter is malformed.

    .. versionadded:: 0.1
    """


class SubscriptionClosed(SSEPushError):
    """Raised by :meth:`Subscription.get` once the source has ended the subscription.

    :param reason: a short machine-readable word: ``"end"`` when a generator
        finished, ``"overflow"`` when the client fell too far behind, or a
        broker-specific reason.
    :param reconnect: whether the client should come back (the stream then
        ends with a ``retry:`` hint) or has reached a deliberate end.
    :param stop: the client must not come back: the stream ends with the stop
        id (:data:`~flask_sse_push.stream.STOP_ID`), whose reconnect is answered
        ``204``, so ``EventSource`` stops. Implies ``reconnect=False``.

    .. versionadded:: 0.1
    """

    def __init__(self, reason: str, *, reconnect: bool = True, stop: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reconnect = reconnect and not stop
        self.stop = stop
