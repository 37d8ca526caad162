"""Keys derived from the app's ``SECRET_KEY``, one per purpose.

Each purpose has its own label, so a key handed out for one (a page's session
key) can never serve another (signing control messages between workers).
"""

from __future__ import annotations

import hashlib
import hmac


def derive_key(secret: object, label: bytes) -> bytes:
    """HMAC-SHA256 of ``label`` keyed by ``secret`` (``SECRET_KEY``: ``str``,
    ``bytes`` or ``None``, which gives the empty key); 32 bytes."""
    if secret is None:
        raw = b""
    elif isinstance(secret, bytes):
        raw = secret
    else:
        raw = str(secret).encode()
    return hmac.new(raw, label, hashlib.sha256).digest()
