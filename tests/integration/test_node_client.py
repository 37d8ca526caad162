"""A resume cursor never kills a real non-browser client: the Node ``eventsource``
package, which sends ``Last-Event-ID`` as Latin-1 bytes, against a real
``gunicorn -k gevent`` on 127.0.0.1.

The server ends each stream after its lifetime (``SSE_PUSH_MAX_LIFETIME``), the
client reconnects with its non-ASCII last event id, and must get ``200`` and
the right events: exactly the missed ones when the id is known, a ``reset`` and
the live stream when it is not; never ``400``, which would stop the client for
good.

Needs ``node`` and ``npm ci --prefix tests/node`` (CI runs it).
"""

from __future__ import annotations

import json
import typing as t

import httpx
import pytest

from tests.apps.lifecycle_app import environment
from tests.support.node_client import node_client
from tests.support.servers import Gunicorn, gunicorn

if t.TYPE_CHECKING:
    pass

pytestmark = pytest.mark.integration

APP = "tests.apps.lifecycle_app:create_app()"
#: The access log shows each request's status and the Last-Event-ID it carried.
LOG_FORMAT = "%(r)s %(s)s <%({last-event-id}i)s>"
CONFIG = environment(SSE_PUSH_MAX_LIFETIME=1.0, SSE_PUSH_RETRY=1500, SSE_PUSH_KEEPALIVE=5.0)


def _publish(server: Gunicorn, data: str, event_id: str | None = None) -> str:
    item = {"data": data} if event_id is None else {"data": data, "id": event_id}
    reply = httpx.post(
        f"{server.url}/publish", json={"channel": "node", "events": [item]}, timeout=10
    )
    reply.raise_for_status()
    sent: str = reply.json()["ids"][0]
    return sent


def _stream_requests(server: Gunicorn) -> list[str]:
    return [line for line in server.output().splitlines() if "GET /events?channel=node" in line]


def test_node_client_resumes_exactly_from_a_non_ascii_id() -> None:
    node_id = "ünïçødé"
    with gunicorn(APP, env=CONFIG, extra_args=("--access-logformat", LOG_FORMAT)) as server:
        with node_client(f"{server.url}/events?channel=node", 2) as client:
            client.next("open")
            assert _publish(server, "a", node_id) == node_id
            first = client.next("event")
            assert (first["type"], first["data"], first["lastEventId"]) == ("message", "a", node_id)
            # The lifetime ends the stream; the client waits 1.5 s (retry:)
            # before it reconnects, so this event is missed and must be replayed.
            assert client.next("error")["readyState"] == 0  # CONNECTING, not CLOSED
            missed = _publish(server, "b")
            second = client.next("event")
            assert (second["type"], second["data"], second["lastEventId"]) == (
                "message",
                "b",
                missed,
            )
            assert [r["kind"] for r in client.seen].count("open") == 2
    # Read after the server stopped: a stream is logged once it has ended.
    requests = _stream_requests(server)
    # The reconnect carried the id as Latin-1 (else the log, which shows the
    # Latin-1 reading, would hold mojibake), and every answer was 200.
    assert len(requests) >= 2 and all(" 200 <" in line for line in requests), requests
    assert any(line.endswith(f"<{node_id}>") for line in requests), requests


def test_node_client_with_an_unknown_non_ascii_id_gets_reset_and_live_events() -> None:
    with gunicorn(APP, env=CONFIG, extra_args=("--access-logformat", LOG_FORMAT)) as server:
        head = _publish(server, "old")
        url = f"{server.url}/events?channel=node"
        with node_client(url, 2, last_event_id="ñø-such-ïd") as client:
            client.next("open")
            reset = client.next("event")
            assert reset["type"] == "reset" and reset["lastEventId"] == head
            assert json.loads(reset["data"]) == {"last_event_id": "ñø-such-ïd", "reason": "unknown"}
            live = _publish(server, "live")
            event = client.next("event")
            assert (event["data"], event["lastEventId"]) == ("live", live)
    requests = _stream_requests(server)
    assert requests and all(" 200 <" in line for line in requests), requests
