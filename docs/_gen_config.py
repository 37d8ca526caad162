"""Fill in the key table of docs/configuration.md from flask_sse_push/config.py.

Run ``python docs/_gen_config.py`` after changing a key; with ``--check`` it
changes nothing and exits 1 if the page is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask_sse_push.config import update_page  # noqa: E402

PAGE = Path(__file__).resolve().parent / "configuration.md"


def main(check: bool) -> int:
    text = PAGE.read_text(encoding="utf-8")
    new = update_page(text)
    if new == text:
        return 0
    if check:
        print(f"{PAGE} is out of date: run python docs/_gen_config.py", file=sys.stderr)
        return 1
    PAGE.write_text(new, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
