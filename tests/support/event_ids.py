"""Event ids that every publish path must accept and resume from."""

from __future__ import annotations

from flask_sse_push.validation import MAX_EVENT_ID_LENGTH

#: Ids a client can send back unchanged, from browsers (UTF-8) and from
#: Latin-1 clients alike.
GOOD_IDS = [
    "",
    "7",
    "in ner",
    "tab\tinside",
    "café",
    "ünïçødé",
    "日本語",
    "x" * MAX_EVENT_ID_LENGTH,
    "flask-sse-push",
    "\u00a0nbsp\u00a0",
]
