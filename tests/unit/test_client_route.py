"""``GET <prefix>/client.js``: the browser client, served cacheably with a validator."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from flask_sse_push import SSEPush
from flask_sse_push.client import CLIENT_SCRIPT


def make_client(prefix: str = "/events") -> FlaskClient:
    app = Flask(__name__)
    app.config["SSE_PUSH_URL_PREFIX"] = prefix
    SSEPush(app)
    return app.test_client()


def get(client: FlaskClient, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body; the response (an open file) is closed."""
    with client.get(path, headers=headers) as response:
        return response.status_code, dict(response.headers), response.get_data()


def test_client_js_is_the_module_as_javascript() -> None:
    status, headers, body = get(make_client(), "/events/client.js")
    assert status == 200
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert body == CLIENT_SCRIPT.read_bytes()
    assert b"export class SSEPushClient" in body


def test_client_js_follows_the_url_prefix() -> None:
    client = make_client("/push")
    assert get(client, "/push/client.js")[0] == 200
    assert get(client, "/events/client.js")[0] == 404


def test_client_js_answers_conditional_requests_with_304() -> None:
    client = make_client()
    _, headers, body = get(client, "/events/client.js")
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert get(client, "/events/client.js", **{"If-None-Match": etag})[0] == 304
    assert get(client, "/events/client.js", **{"If-Modified-Since": modified})[0] == 304
    status, _, again = get(client, "/events/client.js", **{"If-None-Match": '"other"'})
    assert (status, again) == (200, body)
