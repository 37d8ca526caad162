"""A key per session identity, so that a page can keep apart what belongs to
different users of one browser: ``GET <prefix>/session-key``.

The browser client shares one stream among the tabs of an origin. Tabs of
different users (Alice logged out, Bob logged in, an old tab still open) must
not share it, and a tab must not trust a relayed message from a page that is not
in the same session. The key lets the client tell: it is an HMAC-SHA256 of the
stream's identity (what :meth:`SSEPush.identify <flask_sse_push.SSEPush.identify>`
returns for the request, as text; anonymous requests share one key), keyed by
the app's ``SECRET_KEY``. So two tabs get the same key exactly when the server
sees the same identity for them, and the key says nothing of the identity to
whoever does not hold ``SECRET_KEY``.

The endpoint answers ``200 {"key": "..."}`` with ``Cache-Control: no-store``
(the key changes with the login, so no cache may keep it) and ``Vary: Cookie``.
It runs the ``identify`` hook, not the ``authorize`` hooks: it grants nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import typing as t

from flask import Response, current_app, jsonify

from .control import identity_text
from .keys import derive_key
from .runtime import get_runtime

if t.TYPE_CHECKING:
    from .runtime import Runtime

#: What the identity of a request without an ``identify`` hook, or for which it
#: returns ``None``, is keyed as. No ``str()`` of an identity starts with NUL.
_ANONYMOUS = "\x00anonymous"


def scope_secret(secret: object) -> bytes:
    """Derive the session keys' HMAC key from the app's ``SECRET_KEY``.

    Kept apart from the control messages' key (see
    :func:`~flask_sse_push.control_messages.signing_key`) by its own label, so a key
    handed to a page can never sign a control message.
    """
    return derive_key(secret, b"flask-sse-push session scope")


def session_key(secret: bytes, identity: object) -> str:
    """The key of ``identity``: 43 URL-safe characters (256 bits).

    ``identity`` is compared as its ``str()``, as revokes compare it, so ``7``
    and ``"7"`` get the same key; ``None`` is the anonymous key.
    """
    text = identity_text(identity)
    message = (_ANONYMOUS if text is None else text).encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def request_identity(runtime: Runtime) -> object:
    """What the ``identify`` hook returns for the current request, or ``None``."""
    identify = runtime.hooks.identify
    return None if identify is None else identify()


def session_key_view() -> Response:
    """``GET <prefix>/session-key``: the current request's session key."""
    runtime = get_runtime(current_app)
    key = session_key(runtime.settings.scope_secret, request_identity(runtime))
    response = jsonify(key=key)
    response.headers["Cache-Control"] = "no-store"
    response.vary.add("Cookie")
    return response
