"""The documentation stands alone: nothing in README.md or docs/*.md points outside the repository.

A user's clone has no `shared/` folder beside it, so a reference to `../shared/...` (or any `shared/...` path)
is a dead end for them; relative links must resolve to files inside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# A path component `shared/` (optionally after ../ or /work/), not the English word ("shared backbone").
OUTSIDE = re.compile(r"(?:\.\./|/work/|(?<![\w-]))shared/")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _outside_refs(text: str) -> list[str]:
    return [f"line {n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]


def test_the_docs_exist() -> None:
    assert (ROOT / "README.md").is_file() and (ROOT / "docs" / "gpu.md").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_reference_to_a_shared_folder_outside_the_repository(doc: Path) -> None:
    assert _outside_refs(doc.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    bad = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # URLs and in-page anchors
        path = (doc.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            bad.append(target)
    assert bad == [], f"{doc.name}: links that leave the repository or do not exist: {bad}"


def test_the_pattern_catches_what_it_must_and_spares_prose() -> None:
    caught = ["see ../shared/docs/environment.md", "`shared/realdata/` beside", "/work/shared/x"]
    spared = ["the shared backbone", "shared with another benchmark", "not-shared/ layout"]
    assert [bool(_outside_refs(t)) for t in caught] == [True, True, True]
    assert [bool(_outside_refs(t)) for t in spared] == [False, False, False]
