"""The browser client: the ES module the blueprint serves at ``<prefix>/client.js``.

The module itself lives in ``static/client.js`` (types in ``static/client.d.ts``)
and ships in the wheel; this view only serves it with a validator, so browsers
revalidate it cheaply (``304``) instead of downloading it again.
"""

from __future__ import annotations

from pathlib import Path

from flask import Response, send_file

#: The ES module on disk, inside the installed package.
CLIENT_SCRIPT = Path(__file__).resolve().parent / "static" / "client.js"


def client_script_view() -> Response:
    """Serve the browser client as ``text/javascript; charset=utf-8``.

    The answer carries ``ETag`` and ``Last-Modified`` and answers conditional
    requests with ``304`` (Werkzeug's ``send_file``, RFC 9110 §13); how long a
    cache may keep it without asking follows Flask's ``SEND_FILE_MAX_AGE_DEFAULT``.
    """
    return send_file(CLIENT_SCRIPT, mimetype="text/javascript", conditional=True, etag=True)
