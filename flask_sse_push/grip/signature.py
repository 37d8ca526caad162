"""Is a request from the GRIP proxy: the ``Grip-Sig`` check.

Pushpin signs every request it forwards with an HS256 JWT (its ``sig_key``,
issuer ``pushpin``, an ``exp`` an hour ahead); Fastly Fanout signs with ES256
and publishes the public key. RFC 7519 rules apply, checked by PyJWT.
"""

from __future__ import annotations

import typing as t

#: The request header that carries the proxy's signature.
SIG_HEADER = "Grip-Sig"


def is_public_key(key: str) -> bool:
    """Whether ``key`` is a PEM public key (Fanout's ES256) rather than a shared secret."""
    return key.lstrip().startswith("-----BEGIN")


def check_grip_sig(token: str | None, key: str, *, leeway: float = 5.0) -> bool:
    """Return whether ``token`` is a ``Grip-Sig`` made with ``key`` that has not expired.

    :param token: the header's value; ``None`` (no header) is never valid.
    :param key: a shared secret (HS256, Pushpin's ``sig_key``) or a PEM public
        key (ES256, Fastly Fanout).
    :param leeway: seconds of clock difference allowed on ``exp``.

    Never raises for a bad token: any token that does not verify, has no
    ``exp``, or has expired is simply not valid.
    """
    if not token:
        return False
    import jwt  # the grip extra; imported here so the package imports without it

    algorithms = ["ES256"] if is_public_key(key) else ["HS256"]
    try:
        claims: dict[str, t.Any] = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            options={"require": ["exp"]},
            leeway=leeway,
        )
    except jwt.PyJWTError:
        return False
    return isinstance(claims, dict)
