"""Publishing to the GRIP proxy: the items and their delivery.

An item is Pushpin's and Fanout's HTTP publish format (``POST <url>/publish/``
with ``{"items": [...]}``), in the ``http-stream`` format, whose content is
appended to every held stream of the channel as is. Its ``id`` and ``prev-id``
are broker entry ids, so the proxy passes an item on only to connections that
have the one before it, and fetches the next link for the others.
"""

from __future__ import annotations

import base64
import json
import logging
import typing as t
import urllib.error
import urllib.parse
import urllib.request

from ..exceptions import BrokerError

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from ..event import ServerSentEvent

logger = logging.getLogger("flask_sse_push")

#: A publish item, as the proxy's publish endpoint takes it.
Item: t.TypeAlias = "dict[str, t.Any]"


def publish_item(channel: str, event: ServerSentEvent, entry_id: str, prev_id: str) -> Item:
    """Build the item that appends ``event``'s exact wire bytes to the held streams.

    :param channel: the proxy channel (see :func:`.sets.proxy_channel`).
    :param event: the event as clients get it, with its SSE id set.
    :param entry_id: the broker's entry id of this event.
    :param prev_id: the broker's entry id of the channel's event before it.
    """
    return {
        "channel": channel,
        "id": entry_id,
        "prev-id": prev_id,
        "formats": {"http-stream": {"content": event.encode().decode()}},
    }


def close_item(channel: str) -> Item:
    """Build the item that ends every held stream of ``channel``."""
    return {"channel": channel, "formats": {"http-stream": {"action": "close"}}}


class ProxyTarget(t.NamedTuple):
    """One proxy's publish endpoint and its credentials."""

    url: str
    authorization: str | None

    @classmethod
    def parse(cls, url: str) -> ProxyTarget:
        """Read a GRIP URL: the proxy's control base (``http://127.0.0.1:5561``, or
        Fanout's ``https://api.fastly.com/service/<id>``), with an optional
        ``?key=<token>`` sent as a bearer token (Fanout's API token), or
        ``user:password@`` for basic auth.

        :raises ValueError: not an ``http`` or ``https`` URL.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(
                f"SSE_PUSH_GRIP_URL entries must be http(s) URLs of the proxy's publish"
                f" API, such as http://127.0.0.1:5561 for Pushpin, not {url!r}."
            )
        query = urllib.parse.parse_qs(parts.query)
        authorization = None
        if "key" in query:
            authorization = "Bearer " + query.pop("key")[0]
        elif parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            pair = f"{user}:{urllib.parse.unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in (parts.hostname or "") and parts.port is None:
            netloc = f"[{parts.hostname}]"
        path = parts.path.rstrip("/")
        if not path.endswith("/publish"):
            path += "/publish"
        rest = urllib.parse.urlencode(query, doseq=True)
        endpoint = urllib.parse.urlunsplit((parts.scheme, netloc, path + "/", rest, ""))
        return cls(endpoint, authorization)


class ProxyPublisher:
    """Sends items to one or more GRIP proxies.

    One POST per proxy and call, never retried: a proxy that missed an item
    fills the gap from the next link when the channel's next item arrives, so
    a lost item costs a fetch, while a repeated one could not be told apart
    from a new event by every proxy.

    :param urls: GRIP URLs (see :meth:`ProxyTarget.parse`).
    :param timeout: seconds to wait for each proxy.
    """

    def __init__(self, urls: Sequence[str], *, timeout: float = 5.0) -> None:
        self.targets = [ProxyTarget.parse(url) for url in urls]
        self.timeout = timeout

    def send(self, items: list[Item]) -> int:
        """POST ``items`` to every proxy; return to how many it was delivered.

        Failures are logged, not raised: the event is in the broker's history
        already, and each proxy recovers it through the next link.
        """
        body = json.dumps({"items": items}, separators=(",", ":")).encode()
        delivered = 0
        for target in self.targets:
            try:
                self._post(target, body)
            except BrokerError as exc:
                logger.warning("%s", exc)
            else:
                delivered += 1
        return delivered

    def _post(self, target: ProxyTarget, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        if target.authorization is not None:
            headers["Authorization"] = target.authorization
        request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (OSError, urllib.error.URLError) as exc:
            raise BrokerError(
                f"Could not publish to the GRIP proxy at {target.url}: {exc}. Its held"
                " streams get the event from the next link when the channel's next one"
                " arrives; check that the proxy runs and SSE_PUSH_GRIP_URL points at it."
            ) from exc
