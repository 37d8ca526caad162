"""What the streams of one app did in this process, for :meth:`SSEPush.stats`.

Counting happens per connection and per written batch, never per event and
client, so it adds nothing measurable to fan-out.
:class:`PrometheusMetrics` (``SSE_PUSH_PROMETHEUS = True``, the ``metrics``
extra) also feeds ``prometheus_client`` metrics, which work in its multiprocess
mode, so figures from every gunicorn worker add up.
"""

from __future__ import annotations

import collections
import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from .brokers.base import Broker
    from .connections import StreamRegistry


#: Pending batch sizes that make :meth:`Metrics.delivered` take the lock once.
_FOLD_AT = 256


class Metrics:
    """In-process counters. Every method is cheap and thread-safe.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events_published = 0
        self.deliveries = 0
        self.disconnects: collections.Counter[str] = collections.Counter()
        self.replays = 0
        self.resets = 0
        #: Why the last broker check failed; ``None`` while it passes.
        self.broker_problem: str | None = None
        # Batch sizes written but not yet added to ``deliveries``. Every written
        # batch lands here, so that path takes no lock: list.append is atomic
        # under the GIL. They are added up under the lock, in bulk, when read
        # and every _FOLD_AT batches.
        self._unfolded: list[int] = []

    def connected(self, channels: Sequence[str], *, replay: bool) -> None:
        """A stream opened for ``channels``, resuming from a cursor if ``replay``.

        Who is connected is not counted here: the registry of live streams
        knows it (see :meth:`snapshot`).
        """
        if replay:
            with self._lock:
                self.replays += 1

    def disconnected(self, channels: Sequence[str], reason: str) -> None:
        """A stream ended, for ``reason`` (``"client"``, ``"overflow"``, ``"send_timeout"``,
        ``"lifetime"``, ``"shutdown"``, ``"revoked"``, ``"peer gone"``...)."""
        with self._lock:
            self.disconnects[reason] += 1

    def broker_checked(self, problem: str | None) -> None:
        """The broker was checked (health endpoint, worker start): ``problem``
        says why it cannot work, or is ``None``."""
        self.broker_problem = problem

    def published(self) -> None:
        """This process published an event."""
        with self._lock:
            self.events_published += 1

    def delivered(self, count: int, resets: int = 0) -> None:
        """One client was sent ``count`` events, ``resets`` of them ``reset`` events."""
        unfolded = self._unfolded
        unfolded.append(count)
        if resets or len(unfolded) >= _FOLD_AT:
            with self._lock:
                self._fold()
                self.resets += resets

    def _fold(self) -> None:
        """Add the pending batch sizes to ``deliveries``; the caller holds the lock."""
        unfolded = self._unfolded
        # Sizes appended meanwhile, by other threads, lie past ``done`` and stay.
        done = len(unfolded)
        self.deliveries += sum(unfolded[:done])
        del unfolded[:done]

    def snapshot(self, broker: Broker, registry: StreamRegistry) -> dict[str, t.Any]:
        """Return the figures :meth:`SSEPush.stats` documents.

        The connected clients are derived from ``registry``, the one record of them.
        """
        streams = registry.streams()
        lag = max((s.subscription.pending() for s in streams if s.subscription), default=0)
        by_channel = collections.Counter(
            channel for stream in streams for channel in stream.info.channels
        )
        with self._lock:
            self._fold()
            return {
                "clients_connected": len(streams),
                "clients_by_channel": dict(by_channel),
                "events_published": self.events_published,
                "deliveries": self.deliveries,
                "disconnects": dict(self.disconnects),
                "overflow_disconnects": self.disconnects["overflow"],
                "replays": self.replays,
                "resets": self.resets,
                "broker_reconnects": broker.reconnects,
                "broker_rejected_messages": broker.rejected_messages,
                "broker_problem": self.broker_problem,
                "lag": lag,
            }


class PrometheusMetrics(Metrics):
    """:class:`Metrics` that also update ``prometheus_client`` metrics.

    The names follow Prometheus conventions: ``sse_push_clients_connected``,
    ``sse_push_events_published_total``,
    ``sse_push_deliveries_total``, ``sse_push_disconnects_total{reason}``,
    ``sse_push_replays_total``, ``sse_push_resets_total`` and
    ``sse_push_broker_reconnects_total``. Under gunicorn, set
    ``PROMETHEUS_MULTIPROC_DIR`` and collect with
    ``prometheus_client.multiprocess.MultiProcessCollector``: counters and the
    connected-clients gauge then sum over the live workers. Clients per channel
    and the lag stay in :meth:`SSEPush.stats`: channel names come from clients,
    and as labels they would let anyone grow the metric set.

    :param broker: whose ``reconnects`` count is carried over into the counter.
    :param registry: where to register the metrics (default: the global one).

    .. versionadded:: 0.1
    """

    def __init__(self, broker: Broker, registry: t.Any = None) -> None:
        super().__init__()
        self._broker = broker
        self._reconnects_seen = broker.reconnects
        m = _prometheus_metrics(registry)
        self._clients = m["clients"]
        self._published = m["published"]
        self._deliveries = m["deliveries"]
        self._disconnects = m["disconnects"]
        self._replays = m["replays"]
        self._resets = m["resets"]
        self._broker_reconnects = m["broker_reconnects"]

    def _sync_reconnects(self) -> None:
        # The broker counts its own reconnects; carry the difference over here,
        # at the next stream event, rather than adding a hook to every broker.
        seen = self._broker.reconnects
        if seen != self._reconnects_seen:
            self._broker_reconnects.inc(max(0, seen - self._reconnects_seen))
            self._reconnects_seen = seen

    def connected(self, channels: Sequence[str], *, replay: bool) -> None:
        super().connected(channels, replay=replay)
        self._clients.inc()
        if replay:
            self._replays.inc()
        self._sync_reconnects()

    def disconnected(self, channels: Sequence[str], reason: str) -> None:
        super().disconnected(channels, reason)
        self._clients.dec()
        self._disconnects.labels(reason).inc()
        self._sync_reconnects()

    def published(self) -> None:
        super().published()
        self._published.inc()

    def delivered(self, count: int, resets: int = 0) -> None:
        super().delivered(count, resets)
        self._deliveries.inc(count)
        if resets:
            self._resets.inc(resets)


#: The attribute of a ``CollectorRegistry`` that holds this package's metric
#: objects: they belong to that registry, not to this module.
_ON_REGISTRY = "_flask_sse_push_metrics"

#: Only makes creating them and attaching them to the registry one step.
_create_lock = threading.Lock()


def _prometheus_metrics(registry: t.Any) -> dict[str, t.Any]:
    """Create the metric objects once per registry: a second app in the same
    process shares them (its figures add up) instead of failing on duplicates.
    They are kept on the registry object itself."""
    try:
        import prometheus_client as prom
    except ImportError as exc:
        raise RuntimeError(
            "SSE_PUSH_PROMETHEUS needs prometheus_client. Install it with:"
            " pip install 'flask-sse-push[metrics]'"
        ) from exc
    target: prom.CollectorRegistry = prom.REGISTRY if registry is None else registry
    with _create_lock:
        found: dict[str, t.Any] | None = getattr(target, _ON_REGISTRY, None)
        if found is not None:
            return found
        metrics = {
            "clients": prom.Gauge(
                "sse_push_clients_connected",
                "Open SSE streams.",
                multiprocess_mode="livesum",
                registry=target,
            ),
            "published": prom.Counter(
                "sse_push_events_published",
                "Events published through SSEPush.publish().",
                registry=target,
            ),
            "deliveries": prom.Counter(
                "sse_push_deliveries", "Events written to clients.", registry=target
            ),
            "disconnects": prom.Counter(
                "sse_push_disconnects", "Streams ended, by reason.", ["reason"], registry=target
            ),
            "replays": prom.Counter(
                "sse_push_replays", "Streams resumed from a Last-Event-ID.", registry=target
            ),
            "resets": prom.Counter("sse_push_resets", "reset events sent.", registry=target),
            "broker_reconnects": prom.Counter(
                "sse_push_broker_reconnects", "Broker connections re-established.", registry=target
            ),
        }
        setattr(target, _ON_REGISTRY, metrics)
        return metrics
