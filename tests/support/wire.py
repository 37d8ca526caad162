"""An event-stream parser written from the WHATWG HTML spec (section 9.2.6).

It is independent of the package on purpose: tests feed it the server's bytes and
compare what comes out with what was published.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Parsed:
    """One dispatched event as a browser's ``MessageEvent`` would carry it."""

    type: str
    data: str
    last_event_id: str


@dataclasses.dataclass
class Stream:
    """Everything a client learns from a body: events, comments and the retry time."""

    events: list[Parsed] = dataclasses.field(default_factory=list)
    comments: list[str] = dataclasses.field(default_factory=list)
    retry: int | None = None
    last_event_id: str = ""


def _lines(text: str) -> tuple[list[str], str]:
    """Split on CRLF, CR or LF; return complete lines and the unterminated rest."""
    lines: list[str] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "\n" or char == "\r":
            lines.append(text[start:i])
            if char == "\r" and i + 1 < n and text[i + 1] == "\n":
                i += 1
            start = i + 1
        i += 1
    rest = text[start:]
    # A CR at the very end may be the first half of a CRLF; it still ends a line.
    return lines, rest


def parse(body: bytes) -> Stream:
    """Parse a complete body. An event without its blank line is discarded (EOF)."""
    text = body.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines, _ = _lines(text)
    stream = Stream()
    data = ""
    event_type = ""
    id_buffer = stream.last_event_id
    for line in lines:
        if line == "":
            stream.last_event_id = id_buffer
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            stream.events.append(Parsed(event_type or "message", data, id_buffer))
            data = ""
            event_type = ""
            continue
        if line.startswith(":"):
            stream.comments.append(line[1:])
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id":
            if "\0" not in value:
                id_buffer = value
        elif name == "retry":
            if value and value.isascii() and value.isdigit():
                stream.retry = int(value)
    return stream


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split raw bytes into complete ``\\n\\n``-terminated blocks and the rest."""
    blocks = buffer.split(b"\n\n")
    rest = blocks.pop()
    return [block + b"\n\n" for block in blocks], rest
