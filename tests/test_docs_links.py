"""Every relative link in the README and in ``docs/*.md`` points at a file that exists, and every ``#anchor``
at a heading of the page it names (GitHub's heading ids)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", flags=re.M)


def prose(text: str) -> str:
    """The page without its fenced blocks (code is not linked)."""
    return FENCE.sub("", text)


def github_id(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped (word characters, spaces and hyphens
    kept), spaces turned into hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Heading ids of a page; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(prose(page.read_text())):
        base = github_id(heading)
        ids.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return ids


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(page.read_text()))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: are not checked
    ]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_readme_links_every_docs_page():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in relative_links(ROOT / "README.md")}
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []


def test_heading_ids_and_broken_links_are_found(tmp_path):
    assert github_id("Grow inside one run: `train.growth`") == "grow-inside-one-run-traingrowth"
    assert github_id("The blocks — where each idea lives") == "the-blocks--where-each-idea-lives"
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Title\n\n[a](page.md#title-1) [b](missing.md) [c](#nowhere) [d](https://x.org/y)\n"
        "```bash\n[e](not-a-link.md)\n```\n"
    )
    assert broken_links(page) == ["missing.md: no such file", "#nowhere: no heading #nowhere in page.md"]
