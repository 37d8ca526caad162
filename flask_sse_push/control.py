"""Control messages between the workers that share a broker: revoke everywhere.

A stream lives in one worker process; :meth:`SSEPush.revoke
<flask_sse_push.SSEPush.revoke>` must reach all of them. So a revoke travels as
an ordinary event on the broker, on :data:`CONTROL_CHANNEL`, a name that
:func:`~flask_sse_push.validation.check_channel` refuses to clients and
publishers. Each app runtime keeps one ``ControlPlane``: a thread (a
greenlet under gevent) that subscribes to that channel once the runtime knows
its server, applies what it reads to the streams of its process, and stops
when the worker shuts down. No broker needs anything beyond its publish and
subscribe.

A message is JSON, signed with an HMAC-SHA256 keyed by the app's
``SECRET_KEY`` and stamped with the time it was sent (see
:mod:`flask_sse_push.control_messages`). A worker ignores, and counts under
``control`` in :meth:`SSEPush.stats`, a message that is not JSON, has the
wrong fields, carries a wrong signature (``forged``) or is more than
:data:`~flask_sse_push.control_messages.MAX_AGE` seconds old or ahead
(``stale``, a replay of an old message). Nothing a message holds can stop the
worker.

Identities travel as text: a selector matches a stream whose
:attr:`~flask_sse_push.connections.StreamInfo.identity` has the same
``str()``, so ``identity=7`` and ``identity="7"`` select the same streams
whether ``identify()`` returned ``7`` or ``"7"``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
import typing as t
import uuid
import weakref

from .brokers.base import RESET_EVENT
from .connections import Ending
from .control_messages import Rejected, seal, unseal
from .event import ServerSentEvent
from .exceptions import BrokerError, SubscriptionClosed
from .stream import closing_chunk, reconnect_retry, stop_chunk
from .validation import RESERVED_CHANNEL_PREFIX

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from .brokers.base import Broker, Subscription
    from .connections import StreamInfo
    from .runtime import Runtime

logger = logging.getLogger("flask_sse_push")

#: The broker channel control messages travel on; refused to clients.
CONTROL_CHANNEL = RESERVED_CHANNEL_PREFIX + "control"

#: Seconds the control thread waits for a message before it looks at its
#: other duties (stopping, the presence heartbeat).
TICK = 0.25

#: Longest wait, in seconds, before subscribing again after the broker failed.
MAX_BACKOFF = 5.0


def identity_text(identity: object) -> str | None:
    """Return how ``identity`` travels and is compared: ``None``, or its ``str()``."""
    return None if identity is None else str(identity)


@dataclasses.dataclass(frozen=True)
class Revocation:
    """Which streams a revoke ends, in a form that can travel between processes.

    :param channel: streams that serve this channel; ``None``: any channel.
    :param identity: streams whose identity has this ``str()``; ``None``: any.
    :param reconnect: end with a ``retry:`` hint (the client comes back and is
        authorized again) instead of for good.
    """

    channel: str | None
    identity: str | None
    reconnect: bool = False

    def matches(self, info: StreamInfo) -> bool:
        if self.channel is not None and self.channel not in info.channels:
            return False
        return self.identity is None or identity_text(info.identity) == self.identity

    def to_json(self) -> dict[str, t.Any]:
        return {"channel": self.channel, "identity": self.identity, "reconnect": self.reconnect}

    @classmethod
    def from_json(cls, body: dict[str, t.Any]) -> Revocation:
        """Read a revocation; raise ``ValueError`` naming a field of the wrong shape."""
        channel = body.get("channel")
        identity = body.get("identity")
        reconnect = body.get("reconnect")
        if channel is not None and not isinstance(channel, str):
            raise ValueError("channel")
        if identity is not None and not isinstance(identity, str):
            raise ValueError("identity")
        if not isinstance(reconnect, bool):
            raise ValueError("reconnect")
        if channel is None and identity is None:
            raise ValueError("channel")
        return cls(channel, identity, reconnect)


#: The reasons a subscription ends when its broker is closed, not broken.
_BROKER_CLOSED = frozenset({"broker closed", "closed"})


def end_streams(runtime: Runtime, matches: Callable[[StreamInfo], bool], *, reconnect: bool) -> int:
    """End this process' streams of ``runtime`` that ``matches``; return how many.

    For good (the stop id, answered ``204``), or with a ``retry:`` hint.
    """
    return runtime.registry.end_where(matches, Ending("revoked", revoked_chunk(runtime, reconnect)))


def revoked_chunk(runtime: Runtime, reconnect: bool) -> bytes:
    """The last chunk of a revoked stream: the stop id, or a ``retry:`` hint."""
    if reconnect:
        return closing_chunk("revoked", reconnect_retry(runtime.settings.retry))
    return stop_chunk("revoked")


def worker_name() -> str:
    """``host:pid:random``: unique even where containers share a host name and pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ControlPlane:
    """One app's end of the control channel in this process.

    :param runtime: the app's runtime; held weakly, the thread stops once it is gone.
    :param key: from :func:`~flask_sse_push.control_messages.signing_key`.
    """

    def __init__(self, runtime: Runtime, key: bytes) -> None:
        self._runtime = weakref.ref(runtime)
        self._broker: Broker = runtime.broker
        self.key = key
        self._pid = os.getpid()
        self._name = worker_name()
        #: Messages applied, and ignored ones by reason.
        self.applied = 0
        self.ignored: dict[str, int] = {}
        #: Called from the control thread on every tick (the presence heartbeat).
        self.duties: list[Callable[[], None]] = []
        self.thread: threading.Thread | None = None
        self.stopped = False
        self._subscription: Subscription | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """This worker's name on the control channel (new after a fork)."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self._name = worker_name()
        return self._name

    def snapshot(self) -> dict[str, t.Any]:
        """The counts :meth:`SSEPush.stats` reports under ``control``."""
        return {"applied": self.applied, "ignored": dict(self.ignored)}

    # -- sending ---------------------------------------------------------------------

    def send(self, kind: str, body: dict[str, t.Any]) -> None:
        """Publish a control message to every worker sharing the broker.

        :raises BrokerError: the broker could not take it.
        """
        data = seal(self.key, kind, body, self.name, time.time())
        self._broker.publish(CONTROL_CHANNEL, ServerSentEvent(data, event=kind))

    # -- receiving -------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the control channel and start the control thread (once
        per process), unless the broker is
        :attr:`~flask_sse_push.brokers.base.Broker.process_local`: then this
        process is the whole deployment, and its streams are ended directly.

        The first subscription is made here, before the worker serves anything,
        so no stream it accepts can miss a revoke; if the broker cannot be
        reached now, the thread keeps trying.
        """
        if self._broker.process_local:
            return
        with self._lock:
            if self.thread is not None and self._pid == os.getpid() and self.thread.is_alive():
                return
            self.stopped = False
            first: Subscription | None = None
            try:
                first = self._broker.subscribe([CONTROL_CHANNEL])
            except BrokerError as exc:
                logger.warning("Control channel unavailable, retrying: %s", exc)
            self.thread = threading.Thread(
                target=self.run, args=(first,), name="flask_sse_push-control", daemon=True
            )
            self.thread.start()

    def stop(self) -> None:
        """Stop the control thread; it leaves within one tick."""
        self.stopped = True
        subscription = self._subscription
        if subscription is not None:
            subscription.close()

    def _done(self) -> bool:
        runtime = self._runtime()
        return self.stopped or runtime is None or runtime.monitor.stopping

    def run(self, first: Subscription | None = None) -> None:
        """Read and apply control messages until stopped; resubscribe after a
        broker failure from the last message read, so none is missed."""
        last_id: str | None = None
        backoff = 0.1
        while not self._done():
            if first is not None:
                subscription, first = first, None
            else:
                try:
                    subscription = self._broker.subscribe([CONTROL_CHANNEL], last_event_id=last_id)
                except BrokerError as exc:
                    logger.warning("Control channel unavailable, retrying: %s", exc)
                    self._wait(backoff)
                    backoff = min(MAX_BACKOFF, backoff * 2)
                    continue
            self._subscription = subscription
            try:
                while not self._done():
                    for event in subscription.get(timeout=TICK):
                        if event.id is not None:
                            last_id = event.id
                        self.receive(event)
                    backoff = 0.1
                    self._do_duties()
            except (SubscriptionClosed, BrokerError) as exc:
                if self._resubscribes_after(exc):
                    self._wait(backoff)
                    backoff = min(MAX_BACKOFF, backoff * 2)
            finally:
                subscription.close()
                self._subscription = None
        if first is not None:
            first.close()
        self._do_duties()

    def _resubscribes_after(self, exc: SubscriptionClosed | BrokerError) -> bool:
        """Whether to subscribe again (after a pause) once ``exc`` ended the subscription."""
        if isinstance(exc, SubscriptionClosed) and exc.reason in _BROKER_CLOSED:
            # The app closed its broker: subscribing again would open a new
            # listener on it that nothing ever closes.
            self.stopped = True
            return False
        if self._done():
            return False
        logger.info("Control channel subscription ended, subscribing again: %s", exc)
        return True

    def _wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._done() and time.monotonic() < end:
            self._do_duties()
            time.sleep(min(TICK, seconds))

    def _do_duties(self) -> None:
        for duty in self.duties:
            try:
                duty()
            except Exception:  # one failing duty must not stop the control channel
                logger.exception("A control-channel duty failed; it runs again next tick.")

    def receive(self, event: ServerSentEvent) -> None:
        """Check one message from the channel and apply it; never raises."""
        if event.event == RESET_EVENT:
            return  # the broker lost some messages while away: nothing to apply
        try:
            kind, origin, body = unseal(self.key, event.data, time.time())
            if origin == self.name:
                return  # applied already, where it was sent
            if kind != "revoke":
                raise Rejected("unknown kind")
            try:
                revocation = Revocation.from_json(body)
            except ValueError:
                raise Rejected("malformed") from None
            runtime = self._runtime()
            if runtime is None:
                return
            ended = end_streams(runtime, revocation.matches, reconnect=revocation.reconnect)
        except Rejected as exc:
            reason = str(exc.args[0])
            self.ignored[reason] = self.ignored.get(reason, 0) + 1
            logger.warning("Ignored a %s message on the control channel.", reason)
            return
        except Exception:  # whatever a message holds, the worker goes on
            self.ignored["error"] = self.ignored.get("error", 0) + 1
            logger.exception("A control message could not be applied; it is ignored.")
            return
        self.applied += 1
        logger.info(
            "SSE revoke from %s: channel=%s identity=%s ended=%d",
            origin,
            revocation.channel,
            revocation.identity,
            ended,
        )
