"""Publishing from outside the web process: :class:`Publisher`."""

from __future__ import annotations

import typing as t

from .data import encode_data
from .event import ServerSentEvent
from .grip.proxy import ProxyPublisher
from .validation import check_channel, check_published_event

if t.TYPE_CHECKING:
    from types import TracebackType

    from .brokers.base import Broker


class Publisher:
    """Publish events to the web processes' clients through Redis, with no Flask app.

    Use it where the app is not running: an RQ or Celery worker, a cron job, a
    script. Give it the same URL and prefix as the app's ``SSE_PUSH_BROKER_URL``
    and ``SSE_PUSH_REDIS_PREFIX``.

    .. code-block:: python

        from flask_sse_push import Publisher

        publisher = Publisher("redis://localhost:6379/0")
        publisher.publish({"order": 7}, event="created", channel="orders")

    Connections open on the first publish and are shared by every later one;
    the object is safe to share between threads (under gevent, each OS thread
    gets connections of its own).

    :param url: a ``redis://``, ``rediss://`` or ``unix://`` URL, or
        ``redis+cluster://host:port[,host:port...]`` for a Redis Cluster.
    :param prefix: the apps' ``SSE_PUSH_REDIS_PREFIX``.
    :param history: the apps' ``SSE_PUSH_HISTORY``: events kept per channel.
    :param connect_timeout: seconds to wait for a TCP connection to Redis (each
        of up to three attempts).
    :param socket_timeout: seconds to wait for Redis to answer. With both, a
        host that drops packets makes :meth:`publish` raise
        :class:`~flask_sse_push.BrokerError` instead of hanging.
    :param grip_url: the apps' ``SSE_PUSH_GRIP_URL`` (one URL or a list): each
        event then also goes to the GRIP proxies that hold the streams, once,
        from this process (see :doc:`/grip`). Needs a ``redis://`` URL.
    :raises ValueError: ``url`` is not a Redis URL, or ``grip_url`` is given
        with a Redis Cluster URL or is not an http(s) URL.
    :raises RuntimeError: the ``redis`` package is not installed.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sse:",
        history: int = 1000,
        connect_timeout: float = 3.0,
        socket_timeout: float = 5.0,
        grip_url: str | list[str] | None = None,
    ) -> None:
        scheme = url.partition("://")[0]
        cluster = scheme in {"redis+cluster", "rediss+cluster"}
        if scheme not in {"redis", "rediss", "unix"} and not cluster:
            raise ValueError(
                f"Publisher needs a Redis URL such as redis://localhost:6379/0, not {url!r}:"
                " the in-process broker cannot be reached from another process."
            )
        try:
            from .brokers.redis import RedisBroker
            from .brokers.redis_cluster import RedisClusterBroker
        except ImportError as exc:
            raise RuntimeError(
                "Publisher needs the redis package. Install it with:"
                " pip install 'flask-sse-push[redis]'"
            ) from exc
        self._broker: Broker
        self._grip: ProxyPublisher | None = None
        if grip_url is not None:
            if cluster:
                raise ValueError(
                    "grip_url needs a redis:// broker URL: GRIP mode does not support"
                    " Redis Cluster."
                )
            self._grip = ProxyPublisher([grip_url] if isinstance(grip_url, str) else grip_url)
        if cluster:
            self._broker = RedisClusterBroker.from_url(
                url,
                history=history,
                prefix=prefix,
                connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
            )
        else:
            self._broker = RedisBroker.from_url(
                url,
                history=history,
                prefix=prefix,
                connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
            )

    def publish(
        self,
        data: t.Any,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        channel: str = "default",
    ) -> str:
        """Send an event to every client of ``channel``, and return its id.

        :param data: a ``str`` is sent as is; anything else is encoded with
            :func:`json.dumps`.
        :param event: the event type (``None`` is ``message``).
        :param id: an explicit event id; by default Redis assigns one.
        :param retry: a reconnection delay in milliseconds for the clients.
        :param channel: the channel name.
        :raises ValueError: a field or the channel name is invalid, or the event
            would break its clients (as for :meth:`SSEPush.publish`); nothing is sent.
        :raises TypeError: a field has the wrong type, or ``data`` is neither a
            ``str`` nor JSON-serializable (the message names the field); nothing
            is sent.
        :raises BrokerError: Redis could not take the event.
        """
        text = encode_data(data)
        message = check_published_event(ServerSentEvent(text, event=event, id=id, retry=retry))
        if self._grip is not None:
            from .brokers.redis import RedisBroker
            from .grip.publish import publish_through

            assert isinstance(self._broker, RedisBroker)
            return publish_through(self._broker, self._grip, check_channel(channel), message)
        return self._broker.publish(check_channel(channel), message)

    def close(self) -> None:
        """Close the connections. A later publish opens new ones."""
        self._broker.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
