"""The README, the changelog and the docs speak to users: no commit hashes, no tracker
issue numbers."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: A short or full commit hash: 7 to 40 hex digits with both a letter and a digit.
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
#: "issue 13", "Issue #13", "#13", "PR 4".
ISSUE = re.compile(r"\b(?:issues?|PR)\s+#?\d+|(?<![\w&/])#\d+\b", re.IGNORECASE)


def _pages() -> list[Path]:
    docs = ROOT / "docs"
    return [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *sorted(docs.glob("*.md")),
        *sorted(docs.glob("*.rst")),
    ]


def test_the_patterns_find_what_they_are_for() -> None:
    assert COMMIT.findall("compared with 63ab334 at commit a79ae9b") == ["63ab334", "a79ae9b"]
    assert not COMMIT.search("ids like 1700000000000-0, the word facade, deadbeef")
    found = [m.group(0) for m in ISSUE.finditer("before issue 13, see #12 and Issue #7")]
    assert found == ["issue 13", "#12", "Issue #7"]
    assert not ISSUE.search("an anchor (scaling.md#redis-cluster), &#39;, C# 12 items")


def test_no_commit_hash_or_issue_number_in_readme_or_docs() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {match.group(0)}"
        for path in _pages()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for match in (*COMMIT.finditer(line), *ISSUE.finditer(line))
    ]
    assert found == []
