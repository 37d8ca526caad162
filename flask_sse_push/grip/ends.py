"""How streams the proxy holds end: the proxy channels a revoke closes, and
the deadline of a held stream's lifetime.

A held stream subscribes, besides its events' proxy channel, to proxy channels
whose only items are a final chunk and a ``close`` action: one per channel it
serves (a whole-channel revoke), and, when it has an identity, one for the
identity and one per (channel, identity) pair, so that
``sse.revoke(identity=...)`` and ``sse.revoke(channel, identity=...)`` end
exactly the streams they select. Identities compare as their ``str()``, as
revokes compare them; anonymous streams get no identity channel. An identity
is named by an HMAC keyed from the app's secret, so the proxy's channel list
(its stats, its logs) does not show who is connected.

A held stream's lifetime (``SSE_PUSH_MAX_LIFETIME``) needs no state in the
workers: its deadline travels, signed, in the stream's next link, whose
``timeout=`` makes the proxy fetch it when the deadline comes; past the
deadline the next link is answered without ``Grip-Hold``, which ends the
stream after its body (the events since the proxy's last id, then ``retry:``).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Sequence

#: The label of the key that names identities' proxy channels
#: (see :func:`~flask_sse_push.keys.derive_key`).
IDENTITY_LABEL = b"flask-sse-push grip identity channel"


def revoke_channel(prefix: str, channel: str) -> str:
    """The proxy channel whose items end the held streams of ``channel``."""
    return f"{prefix}revoke:{channel}"


def _digest(secret: bytes, *parts: str) -> str:
    # Channel names never contain NUL, so the joined parts are unambiguous;
    # 128 bits of the HMAC keep the name short.
    return hmac.new(secret, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def identity_channel(prefix: str, secret: bytes, identity: str) -> str:
    """The proxy channel whose items end the held streams of ``identity``."""
    return f"{prefix}revoke-id:{_digest(secret, identity)}"


def channel_identity_channel(prefix: str, secret: bytes, channel: str, identity: str) -> str:
    """The proxy channel whose items end the held streams of ``identity`` that
    serve ``channel``."""
    return f"{prefix}revoke-ci:{_digest(secret, channel, identity)}"


def end_channels(
    prefix: str, secret: bytes, channels: Sequence[str], identity: str | None
) -> list[str]:
    """The proxy channels a held stream of ``channels`` and ``identity``
    subscribes to so that revokes reach it: ``len(channels)`` of them, and
    ``len(channels) + 1`` more for a stream with an identity."""
    names = [revoke_channel(prefix, name) for name in channels]
    if identity is not None:
        names.append(identity_channel(prefix, secret, identity))
        names += [channel_identity_channel(prefix, secret, name, identity) for name in channels]
    return names


def revoked_channel(prefix: str, secret: bytes, channel: str | None, identity: str | None) -> str:
    """The one proxy channel a revoke of ``channel`` and ``identity`` (either
    may be ``None``, not both) closes.

    :raises ValueError: both are ``None``.
    """
    if identity is None:
        if channel is None:
            raise ValueError("A revoke names a channel, an identity, or both.")
        return revoke_channel(prefix, channel)
    if channel is None:
        return identity_channel(prefix, secret, identity)
    return channel_identity_channel(prefix, secret, channel, identity)


def link_timeout(deadline: float | None, refresh: int | None, now: float) -> int | None:
    """The next link's ``timeout=`` in whole seconds (at least 1): when the
    lifetime's ``deadline`` (a :func:`time.time` value) comes, or ``refresh``
    seconds, whichever is sooner; ``None`` when neither applies."""
    if deadline is None:
        return refresh
    remaining = max(1, math.ceil(deadline - now))
    return remaining if refresh is None else min(remaining, refresh)
