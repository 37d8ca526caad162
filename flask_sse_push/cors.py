"""Cross-origin streams: ``SSE_PUSH_CORS_ORIGINS``, applied to the SSE blueprint only.

flask-cors writes the headers: the listed origin is echoed with
``Access-Control-Allow-Credentials: true`` (``new EventSource(url,
{withCredentials: true})`` needs both), and a preflight is answered with the
request headers it asks for, ``Last-Event-ID`` included. What flask-cors does not
do is refuse: a request from an unlisted origin would still open a stream, which
the browser then hides from the page. So such requests get a ``403`` first.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, request


def check_origins(value: object) -> list[str] | None:
    """Return the origins of ``SSE_PUSH_CORS_ORIGINS``, normalised, or raise.

    :raises ValueError: an entry is not ``scheme://host[:port]``.
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise ValueError(
            "SSE_PUSH_CORS_ORIGINS must be None or a list of origins like"
            f" ['https://app.example.com'], not {value!r}."
        )
    origins = []
    for item in items:
        parts = urlsplit(item) if isinstance(item, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or "*" in item
        ):
            raise ValueError(
                f"SSE_PUSH_CORS_ORIGINS entry {item!r} is not an origin. Write each one"
                " as scheme://host[:port], like 'https://app.example.com'; wildcards"
                " are not allowed, because the stream is sent with credentials."
            )
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return origins


def _same_host(origin: str) -> bool:
    # Compared without the scheme: behind a TLS-terminating proxy the app may
    # see http while the browser is on https.
    return urlsplit(origin).netloc.lower() == request.host.lower()


def apply_cors(blueprint: Blueprint, origins: list[str]) -> None:
    """Allow ``origins`` on ``blueprint``, with credentials, and refuse the rest."""
    try:
        from flask_cors import CORS
    except ImportError as exc:
        raise RuntimeError(
            "SSE_PUSH_CORS_ORIGINS is set, but flask-cors is not installed. Install it"
            " with: pip install 'flask-sse-push[cors]'"
        ) from exc
    allowed = frozenset(origins)

    def refuse_other_origins() -> Response | None:
        origin = request.headers.get("Origin")
        if origin is None or origin.lower() in allowed or _same_host(origin):
            return None
        return Response(
            f"Origin {origin!r} may not open this stream; add it to"
            " SSE_PUSH_CORS_ORIGINS to allow it.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )

    blueprint.before_request(refuse_other_origins)
    CORS(
        blueprint,
        origins=origins,
        supports_credentials=True,
        methods=["GET"],
        vary_header=True,
    )
