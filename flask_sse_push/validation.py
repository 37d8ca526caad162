"""Checks for what clients send: channel names and ``Last-Event-ID`` cursors."""

from __future__ import annotations

import re

from .exceptions import ChannelError, LastEventIDError

#: Allowed channel names. The set is small on purpose: names become Redis keys
#: and appear in URLs and logs.
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

#: Longest ``Last-Event-ID`` accepted. Real cursors are far shorter; the bound
#: keeps a hostile header from costing memory or a slow history scan.
MAX_LAST_EVENT_ID_LENGTH = 256


def check_channel(name: object) -> str:
    """Return ``name`` if it is an allowed channel name, else raise :class:`ChannelError`."""
    if not isinstance(name, str) or CHANNEL_PATTERN.fullmatch(name) is None:
        raise ChannelError(
            f"Invalid channel name {name!r}: use 1 to 128 characters from A-Z a-z 0-9 _ . : -"
        )
    return name


def check_channels(names: list[str]) -> list[str]:
    """Check each name and drop repeats, keeping the first occurrence's order."""
    return list(dict.fromkeys(check_channel(name) for name in names))


def check_last_event_id(value: str) -> str:
    """Return a ``Last-Event-ID`` value if it could be an event id, else raise.

    :raises LastEventIDError: the value is longer than
        :data:`MAX_LAST_EVENT_ID_LENGTH` or contains CR, LF or NUL, which no
        event id can contain.
    """
    if len(value) > MAX_LAST_EVENT_ID_LENGTH:
        raise LastEventIDError(
            f"Last-Event-ID is {len(value)} characters long; event ids are at most"
            f" {MAX_LAST_EVENT_ID_LENGTH}. Drop the header to start from live events."
        )
    if "\r" in value or "\n" in value or "\0" in value:
        raise LastEventIDError(
            "Last-Event-ID contains CR, LF or NUL, which no event id can contain."
        )
    return value
