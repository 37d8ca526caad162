"""The SSE wire format (WHATWG HTML, section 9.2.5), as pure string functions.

Nothing here validates: :class:`~flask_sse_push.ServerSentEvent` checks its
fields before it calls :func:`encode_event`. Nothing here does IO or imports Flask.
"""

from __future__ import annotations

import re

#: The only three line terminators of the event-stream grammar. ``str.splitlines``
#: would also split on U+2028, U+0085, form feed and others, which SSE keeps as data.
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """Split ``text`` on CRLF, CR and LF only."""
    if "\r" not in text and "\n" not in text:
        return [text]
    return LINE_BREAK.split(text)


def encode_event(
    data: str,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> str:
    """Return one event block, ending with a blank line.

    Fields are written as ``name: value`` with the space, so a value that starts
    with a space survives the parser's removal of exactly one space. Lines end with
    LF only. An empty line of data is written as a bare ``data:``, so empty data
    still gives one data line and the event fires.
    """
    parts: list[str] = []
    if event is not None:
        parts.append(f"event: {event}\n")
    if id is not None:
        parts.append(f"id: {id}\n")
    if retry is not None:
        parts.append(f"retry: {retry}\n")
    for line in split_lines(data):
        parts.append(f"data: {line}\n" if line else "data:\n")
    parts.append("\n")
    return "".join(parts)


def encode_comment(text: str = "") -> str:
    """Return a comment block (``: text``), which every client ignores.

    Each line of ``text`` becomes its own comment line, so a line break in the
    text cannot start a field.
    """
    return "".join(f": {line}\n" if line else ":\n" for line in split_lines(text)) + "\n"


def encode_retry(milliseconds: int) -> str:
    """Return a block that only sets the client's reconnection delay."""
    return f"retry: {milliseconds}\n\n"
