"""How does the test parser's time grow with its input?

Usage (from the repository root)::

    python bench/parser.py            # the current parser
    python bench/parser.py OLD.py     # also a parser module saved from elsewhere

Feeds :class:`flask_sse_push.testing.EventStreamParser` three shapes at 1x, 2x
and 4x size: one event of many short lines in one piece, many short events in
one piece, and one long line in 64 KiB pieces. Linear time shows as a constant
ns/byte column. Prints a Markdown table.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_sse_push import testing  # noqa: E402

SHAPES: dict[str, t.Callable[[int], list[bytes]]] = {
    "one event, n lines": lambda n: [b"data: 0123456789\n" * n + b"\n"],
    "n events": lambda n: [b"data: ab\n\n" * n],
    "one line, 64 KiB pieces": lambda n: [b"data: "] + [b"z" * 65536] * (n // 3000) + [b"\n\n"],
}
SIZES = (50_000, 100_000, 200_000)


def _time(parser_class: type[t.Any], pieces: list[bytes]) -> float:
    parser = parser_class()
    started = time.perf_counter()
    for piece in pieces:
        parser.feed(piece)
    return time.perf_counter() - started


def main() -> None:
    parsers: dict[str, type[t.Any]] = {"current": testing.EventStreamParser}
    for path in sys.argv[1:]:
        spec = importlib.util.spec_from_file_location("other_parser", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        parsers[Path(path).name] = module.EventStreamParser
    print("| parser | shape | n | bytes | seconds | ns/byte |")
    print("|---|---|---:|---:|---:|---:|")
    for name, parser_class in parsers.items():
        for shape, make in SHAPES.items():
            for n in SIZES:
                pieces = make(n)
                size = sum(len(piece) for piece in pieces)
                seconds = _time(parser_class, pieces)
                print(
                    f"| {name} | {shape} | {n} | {size} | {seconds:.3f} |"
                    f" {seconds / size * 1e9:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
