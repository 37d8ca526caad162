"""Cluster broker ids, positions and cursors; and the verdict on a client's cursor.

Every channel has its own stream on the shard that owns its hash slot, so ids
are issued per channel: ``"<ms>-<seq>"`` from that shard's clock at microsecond
resolution, and always above the stream's previous id. Ids of one channel
grow strictly; ids of different channels compare by publish time only as well
as the shards' clocks agree. So a stream of several channels resumes from a
*position per channel*, the composite cursor::

    ~<base ms, base 36>.<position>.<position>...

with one position per channel, in sorted channel-name order, each
``<base - ms, base 36>-<seq, base 36>``, or empty for "nothing yet" (``0-0``).
A stream of one channel keeps plain entry ids.

A composite cursor longer than a ``Last-Event-ID`` may be (a stream of many
channels) falls back to the *summary*::

    ~~<ms, base 36>-<seq, base 36>.<tag, base 36>

the oldest position, from which a resume repeats but never skips, and a tag
that makes the id unique per event of the stream (see :func:`wire_id`).

Anything else a client sends is checked like any input, numbers included: it
resumes nothing and gets a ``reset``.
"""

from __future__ import annotations

import typing as t

from ....validation import MAX_EVENT_ID_LENGTH
from .._scripts import ZERO, decode_holes, format_id, optional_key, parse_id

if t.TYPE_CHECKING:
    from collections.abc import Sequence

    from .._scripts import Entry, Key

#: Marks a composite cursor; entry ids and user ids never start with it here.
COMPOSITE = "~"

#: Marks the summary a too long composite cursor falls back to.
SUMMARY = "~~"

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"

#: Every number in an id the brokers issue is below this (15 decimal digits, as
#: :func:`parse_id` reads them); a larger one was never issued, and Redis
#: refuses stream ids past 2**64 - 1.
LIMIT = 10**15


def _b36(number: int) -> str:
    if number == 0:
        return "0"
    out = []
    while number:
        number, rest = divmod(number, 36)
        out.append(_DIGITS[rest])
    return "".join(reversed(out))


def _from_b36(text: str) -> int:
    if not text or len(text) > 13 or any(c not in _DIGITS for c in text):
        raise ValueError(f"not a base-36 number: {text!r}")
    number = int(text, 36)
    if number >= LIMIT:
        raise ValueError(f"not an issued number: {text!r}")
    return number


def encode_positions(positions: Sequence[Key]) -> str:
    """Encode one position per channel (in sorted channel order) as a cursor."""
    base = max((key[0] for key in positions), default=0)
    parts = ["" if key == ZERO else f"{_b36(base - key[0])}-{_b36(key[1])}" for key in positions]
    return COMPOSITE + _b36(base) + "." + ".".join(parts)


def decode_positions(text: str, count: int) -> list[Key] | None:
    """Return the positions of a composite cursor for ``count`` channels, or ``None``."""
    if not text.startswith(COMPOSITE) or text.startswith(SUMMARY):
        return None
    base_text, _, rest = text[1:].partition(".")
    parts = rest.split(".")
    if len(parts) != count:
        return None
    try:
        base = _from_b36(base_text)
        positions = []
        for part in parts:
            if not part:
                positions.append(ZERO)
                continue
            delta, dash, seq = part.partition("-")
            if not dash or _from_b36(delta) > base:
                return None
            positions.append((base - _from_b36(delta), _from_b36(seq)))
    except ValueError:
        return None
    return positions


def wire_id(positions: Sequence[Key]) -> str:
    """The SSE id for a stream at ``positions``: plain for one channel.

    A composite cursor longer than a ``Last-Event-ID`` may be (many channels)
    falls back to the summary: the oldest position, so resuming from it may
    repeat events of the other channels but skips none, and a tag, the sum of
    all positions as numbers. Every event of a stream moves one position
    forward, so the sum grows with each: no two events of a stream share an
    id, and a client that drops ids it has seen (``client.js``) drops none.
    """
    if len(positions) == 1:
        return format_id(positions[0])
    text = encode_positions(positions)
    if len(text) > MAX_EVENT_ID_LENGTH:
        oldest = min((key for key in positions if key != ZERO), default=ZERO)
        tag = sum(ms * LIMIT + seq for ms, seq in positions)
        return f"{SUMMARY}{_b36(oldest[0])}-{_b36(oldest[1])}.{_b36(tag)}"
    return text


def decode_summary(text: str) -> Key | None:
    """The oldest position a summary names, or ``None`` if ``text`` is none."""
    if not text.startswith(SUMMARY):
        return None
    position, dot, tag = text[len(SUMMARY) :].partition(".")
    ms, dash, seq = position.partition("-")
    try:
        if not dot or not dash or not 0 < len(tag) <= 40 or any(c not in _DIGITS for c in tag):
            return None
        return _from_b36(ms), _from_b36(seq)
    except ValueError:
        return None


#: How far (ms) a position taken from elsewhere may lie ahead of a shard's clock:
#: shards' clocks disagree a little. Further ahead, it was never issued.
CLOCK_SLACK_MS = 60_000


class ChannelRead(t.NamedTuple):
    """One channel's stream, read atomically on its shard, and that shard's clock (ms).

    ``newest`` is the newest id the channel issued (its clock record, which
    outlives its stream), ``holes`` the ranges of ids (exclusive) its shard's
    restarts may have lost, and ``restarted`` when (ms) the shard restarted, if
    it did after the channel's last publish: the ids between ``newest`` and
    then may be lost too.
    """

    tail: Key | None
    found: Key | None
    entries: list[Entry]
    clock: int | None = None
    newest: Key | None = None
    holes: tuple[tuple[Key, Key], ...] = ()
    restarted: int | None = None


#: A channel's clock record as read: newest id, holes, restart time (ms).
Record: t.TypeAlias = "tuple[Key | None, tuple[tuple[Key, Key], ...], int | None]"


def restart_record(raw: Sequence[t.Any]) -> Record:
    """Decode the read script's channel record: newest id, holes, restart time."""
    if len(raw) < 3:
        return None, (), None
    return optional_key(raw[0]), decode_holes(raw[1]), None if not raw[2] else int(raw[2])


def lost(start: Key, read: ChannelRead) -> bool:
    """Whether the shard cannot vouch for the events after ``start`` on this channel.

    The channel issued ids after ``start`` that its stream no longer holds any of
    (a deleted stream); or ``start`` lies in a hole a restart left, or between
    the channel's newest id and a restart no publish has followed yet: a shard
    restored from an older snapshot never issued the ids in there, though
    another shard may have.
    """
    if start == ZERO:
        return False
    newest = read.newest or read.tail or ZERO
    if newest > start and not any(entry.key > start for entry in read.entries):
        return True
    if any(low < start < high for low, high in read.holes):
        return True
    return read.restarted is not None and newest < start < (read.restarted, 0)


def verdict(start: Key, read: ChannelRead, *, strict: bool) -> str:
    """Judge a channel's resume position: ``"ok"``, ``"expired"`` or ``"unknown"``.

    Every entry names its predecessor (``prev``). A position issued on this
    channel (``strict``) must be the predecessor of the first entry after it,
    or the newest entry: otherwise the stream never held it (a lost write, a
    wiped node) and resuming could skip events silently. A position taken
    from elsewhere (a plain id over several channels) needs only no gap.
    """
    after = [entry for entry in read.entries if entry.key > start]
    if lost(start, read):
        return "unknown"
    if after:
        prev = after[0].prev
        if prev > start:
            return "expired"
        return "ok" if prev == start or not strict else "unknown"
    if start == ZERO or read.tail == start:
        return "ok"
    if not strict and (read.tail or ZERO) <= start and not _ahead(start, read):
        return "ok"
    return "unknown"


def _ahead(start: Key, read: ChannelRead) -> bool:
    """Whether ``start`` lies further ahead of the shard's clock than clocks disagree."""
    return read.clock is not None and start[0] > read.clock + CLOCK_SLACK_MS


def foreign_verdict(start: Key, read: ChannelRead) -> str:
    """Judge a plain id that may come from another channel's stream, for one channel.

    Ids are times, so any issued id is a position in every channel; but a
    stream that began after it (its first entry follows nothing) may also be
    one the cluster lost and began again, so that is ``"unknown"``.
    """
    judged = verdict(start, read, strict=True)
    if judged != "unknown":
        return judged
    after = [entry for entry in read.entries if entry.key > start]
    if after and after[0].prev == ZERO:
        return "unknown"
    return verdict(start, read, strict=False)


def plain_start(text: str) -> Key | None:
    """A plain entry id, or a summary's oldest position, as a position; or ``None``."""
    return parse_id(text) or decode_summary(text)
