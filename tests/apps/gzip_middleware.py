"""A WSGI middleware that gzips each response body, flushing after every chunk.

It is what a user puts around ``app.wsgi_app`` to compress text responses, and
it streams: every chunk the app yields comes out as a gzip chunk the client can
decompress at once (``Z_SYNC_FLUSH``).
"""

from __future__ import annotations

import typing as t
import zlib

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator


class GzipPerChunk:
    """Compress every response whose client sends ``Accept-Encoding: gzip``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(
        self, environ: dict[str, t.Any], start_response: Callable[..., t.Any]
    ) -> Iterable[bytes]:
        if "gzip" not in environ.get("HTTP_ACCEPT_ENCODING", ""):
            return self.app(environ, start_response)

        def compressed_start(status: str, headers: list[tuple[str, str]], *args: t.Any) -> t.Any:
            kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
            return start_response(status, [*kept, ("Content-Encoding", "gzip")], *args)

        body = self.app(environ, compressed_start)
        return self._compress(body)

    @staticmethod
    def _compress(body: Iterable[bytes]) -> Iterator[bytes]:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        try:
            for chunk in body:
                yield compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
            yield compressor.flush()
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
