"""Who is connected, across every worker sharing the broker: ``Presence``.

Each worker publishes one record (see :mod:`flask_sse_push.brokers.records`): for
every channel, how many streams each identity has there, and the worker's
:meth:`SSEPush.stats <flask_sse_push.SSEPush.stats>`. Its control thread (see
:mod:`flask_sse_push.control`) writes the record within a tick (a quarter of
a second) of a stream opening or closing, and otherwise every third of
``SSE_PUSH_PRESENCE_TTL``, with that TTL. A worker that stops cleanly deletes
its record; one killed outright leaves it to expire, so its streams drop out
of :meth:`SSEPush.presence <flask_sse_push.SSEPush.presence>` within
``SSE_PUSH_PRESENCE_TTL`` seconds (15 by default).

The counts are of streams. With the browser client, which shares one stream
between the tabs of a browser, a count is a browser (a person at a machine),
not a tab.

Identities travel as JSON: an ``int`` or a ``str`` that ``identify()``
returned comes back as itself, ``None`` (anonymous) as ``None``, and anything
else as its ``str()``.

Opt-in presence events: for the channels that ``SSE_PUSH_PRESENCE_EVENTS``
names (``fnmatch`` patterns such as ``"room.*"``), the library publishes
:data:`JOIN_EVENT` when a stream of the channel opens and :data:`LEAVE_EVENT`
when it closes, with data ``{"identity": ...}``. Their types start with
:data:`~flask_sse_push.validation.RESERVED_EVENT_PREFIX`, which applications
may not publish, so a client can trust them.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import logging
import os
import socket
import time
import typing as t
import weakref

from .event import ServerSentEvent
from .exceptions import BrokerError
from .validation import RESERVED_EVENT_PREFIX

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from .connections import StreamInfo
    from .runtime import Runtime

logger = logging.getLogger("flask_sse_push")

#: The event type published on a channel when a stream of it opens.
JOIN_EVENT = RESERVED_EVENT_PREFIX + "join"

#: The event type published on a channel when a stream of it closes.
LEAVE_EVENT = RESERVED_EVENT_PREFIX + "leave"

#: Seconds between two warnings that the records cannot be written.
_WARN_EVERY = 30.0

Identity: t.TypeAlias = "str | int | None"


def identity_value(identity: object) -> Identity:
    """How ``identity`` is stored in a record: ``int``, ``str`` or ``None``
    as they are (not ``bool``), anything else as its ``str()``."""
    if identity is None or isinstance(identity, str):
        return identity
    if isinstance(identity, int) and not isinstance(identity, bool):
        return identity
    return str(identity)


def _add(total: dict[str, t.Any], part: dict[str, t.Any]) -> None:
    """Add the figures of one worker's stats to ``total``: numbers are summed,
    mappings summed key by key, and ``lag`` is the largest."""
    for key, value in part.items():
        if key == "lag":
            total[key] = max(total.get(key, 0), value)
        elif isinstance(value, dict):
            _add(total.setdefault(key, {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


class Presence:
    """One app's presence record in this process, and the reader of everyone's.

    :param runtime: held weakly.
    :param ttl: ``SSE_PUSH_PRESENCE_TTL``, seconds.
    :param events: ``SSE_PUSH_PRESENCE_EVENTS``, channel patterns.
    """

    def __init__(self, runtime: Runtime, ttl: float, events: Iterable[str] = ()) -> None:
        self._runtime = weakref.ref(runtime)
        self.ttl = ttl
        self.events = tuple(events)
        #: Streams opened and closed so far; the record is written again when it moves.
        self.changes = 0
        self._written = -1
        self._written_at = float("-inf")
        self._warned_at = float("-inf")

    @property
    def heartbeat(self) -> float:
        """Seconds between two writes of an unchanged record: a third of the TTL."""
        return self.ttl / 3

    # -- streams opening and closing -------------------------------------------------

    def opened(self, info: StreamInfo) -> None:
        """A stream was accepted; publish joins where configured. Never raises."""
        self.changes += 1
        self._announce(JOIN_EVENT, info)

    def closed(self, info: StreamInfo) -> None:
        """A stream was released; publish leaves where configured. Never raises."""
        self.changes += 1
        self._announce(LEAVE_EVENT, info)

    def _announce(self, kind: str, info: StreamInfo) -> None:
        if not self.events:
            return
        runtime = self._runtime()
        if runtime is None:
            return
        data = json.dumps({"identity": identity_value(info.identity)})
        for channel in info.channels:
            if any(fnmatch.fnmatchcase(channel, pattern) for pattern in self.events):
                try:
                    runtime.broker.publish(channel, ServerSentEvent(data, event=kind))
                except Exception:  # a presence event must never fail a stream
                    logger.warning("Could not publish %s on %s.", kind, channel, exc_info=True)

    # -- this worker's view ----------------------------------------------------------

    def local(self) -> dict[str, collections.Counter[t.Any]]:
        """Channel -> identity (as ``identify()`` returned it) -> streams, in this process."""
        runtime = self._runtime()
        counts: dict[str, collections.Counter[t.Any]] = {}
        if runtime is None:
            return counts
        for stream in runtime.registry.streams():
            if stream.ending is not None:
                continue
            identity = stream.info.identity
            try:
                hash(identity)
            except TypeError:
                identity = str(identity)
            for channel in stream.info.channels:
                counts.setdefault(channel, collections.Counter())[identity] += 1
        return counts

    def record(self, runtime: Runtime) -> dict[str, t.Any]:
        """This worker's record: who is connected here, and its stats."""
        entries = [
            [channel, identity_value(identity), count]
            for channel, identities in self.local().items()
            for identity, count in identities.items()
        ]
        stats = runtime.metrics.snapshot(runtime.broker, runtime.registry)
        stats["control"] = runtime.control.snapshot()
        return {
            "worker": runtime.control.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "presence": entries,
            "stats": stats,
        }

    # -- the record in the broker ----------------------------------------------------

    def tick(self) -> None:
        """Write the record if streams came or went, or the heartbeat is due;
        delete it once the worker stops. Called by the control thread."""
        runtime = self._runtime()
        if runtime is None:
            return
        records = runtime.broker.worker_records()
        if records is None:
            return
        try:
            if runtime.monitor.stopping or runtime.control.stopped:
                if self._written >= 0:
                    records.remove(runtime.control.name)
                    self._written = -1
                return
            now = time.monotonic()
            changes = self.changes
            if changes == self._written and now - self._written_at < self.heartbeat:
                return
            value = json.dumps(self.record(runtime), separators=(",", ":"))
            records.put(runtime.control.name, value, self.ttl)
            self._written, self._written_at = changes, now
        except BrokerError as exc:
            if time.monotonic() - self._warned_at >= _WARN_EVERY:
                self._warned_at = time.monotonic()
                logger.warning("Presence and deployment stats not updated: %s", exc)

    def _records(self) -> list[dict[str, t.Any]]:
        """Every worker's record; this worker's made afresh. Broken records are skipped.

        :raises BrokerError: the records cannot be read.
        """
        runtime = self._runtime()
        assert runtime is not None, "the runtime outlives its presence while in use"
        mine = self.record(runtime)
        records = runtime.broker.worker_records()
        if records is None:
            return [mine]
        found = [mine]
        for name, text in records.read().items():
            if name == mine["worker"]:
                continue
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("presence"), list):
                found.append(record)
        return found

    def who(self, channel: str) -> dict[t.Any, int]:
        """Identity -> open streams of ``channel`` in every worker.

        :raises BrokerError: the other workers' records cannot be read.
        """
        runtime = self._runtime()
        assert runtime is not None
        if runtime.broker.worker_records() is None:
            return dict(self.local().get(channel, {}))
        total: collections.Counter[t.Any] = collections.Counter()
        for record in self._records():
            for entry in record["presence"]:
                if isinstance(entry, list) and len(entry) == 3 and entry[0] == channel:
                    _, identity, count = entry
                    if isinstance(count, int):
                        total[identity] += count
        return dict(total)

    def deployment_stats(self) -> dict[str, t.Any]:
        """The stats of every worker, added up, and ``workers``: who answered.

        :raises BrokerError: the other workers' records cannot be read.
        """
        total: dict[str, t.Any] = {}
        workers = []
        for record in self._records():
            stats = record.get("stats")
            if isinstance(stats, dict):
                _add(total, stats)
            workers.append({key: record.get(key) for key in ("worker", "host", "pid")})
        total["overflow_disconnects"] = total.get("disconnects", {}).get("overflow", 0)
        total["workers"] = sorted(workers, key=lambda w: str(w["worker"]))
        return total
