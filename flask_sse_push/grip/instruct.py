"""The GRIP instructions a held stream is answered with, and the ``Grip-Last``
headers the proxy sends back when it fetches the next link.

Header syntax follows Pushpin's GRIP documentation: ``Grip-Hold: stream``; one
``Grip-Channel: <name>; prev-id=<id>`` per channel; ``Grip-Keep-Alive:
<data>; format=cstring; timeout=<seconds>``; ``Grip-Link: <url>; rel=next``;
and on a next-link request, ``Grip-Last: <name>; last-id=<id>`` per channel.
Channel names (``A-Z a-z 0-9 _ . : -``) and entry ids (``<ms>-<seq>``) need no
quoting in these headers.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

#: Escapes of Pushpin's ``cstring`` format, for keep-alive data.
_CSTRING = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def cstring(data: bytes) -> str:
    """Escape ``data`` (UTF-8 text) for a header value in ``format=cstring``."""
    return "".join(_CSTRING.get(char, char) for char in data.decode())


def hold_headers(
    prev_ids: Mapping[str, str],
    *,
    keepalive: bytes,
    interval: float,
    next_url: str,
    link_timeout: int | None = None,
) -> list[tuple[str, str]]:
    """Return the headers that make the proxy hold a stream.

    :param prev_ids: proxy channel -> the id of the last event of that channel
        the response carries (or the channel's newest id at the read): the
        proxy sends the next item only if its ``prev-id`` matches, and fetches
        ``next_url`` otherwise.
    :param keepalive: bytes the proxy sends after ``interval`` seconds of quiet.
    :param next_url: where the proxy fetches what it missed.
    :param link_timeout: seconds after which the proxy fetches ``next_url``
        anyway if the stream stayed quiet; ``None``: only on a gap.
    """
    headers = [("Grip-Hold", "stream")]
    headers += [("Grip-Channel", f"{name}; prev-id={prev}") for name, prev in prev_ids.items()]
    seconds = max(1, round(interval))
    headers.append(("Grip-Keep-Alive", f"{cstring(keepalive)}; format=cstring; timeout={seconds}"))
    link = f"<{next_url}>; rel=next"
    if link_timeout is not None:
        link += f"; timeout={link_timeout}"
    headers.append(("Grip-Link", link))
    return headers


def parse_grip_last(values: Iterable[str]) -> dict[str, str]:
    """Read ``Grip-Last`` header values into proxy channel -> last id.

    Values may also come joined by commas into one header. A part without a
    ``last-id`` parameter is skipped.
    """
    lasts: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            name, _, params = part.partition(";")
            name = name.strip()
            for param in params.split(";"):
                key, _, found = param.partition("=")
                if key.strip() == "last-id" and name:
                    lasts[name] = found.strip().strip('"')
    return lasts
