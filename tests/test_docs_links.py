"""Every relative link in README.md and docs/*.md points at a file the repository tracks.

A link that works in a working copy can still be broken for everyone else: ``.gitignore`` once
kept the heatmaps under docs/layouts/ out of the repository while the README linked them. So the
check is against ``git ls-files``, not the file system (skipped outside a git checkout, e.g. in
an sdist).
"""
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target) and ![alt](target); an optional "title" after the target is dropped.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _tracked() -> set[str]:
    if shutil.which("git") is None:
        pytest.skip("needs git to list the tracked files")
    r = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout (no tracked files to check links against)")
    return set(filter(None, r.stdout.split("\0")))


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(text: str) -> list[str]:
    """The link targets of markdown ``text`` that point into the repository (code blocks skipped)."""
    targets = []
    for angled, bare in LINK.findall(FENCE.sub("", text)):
        target = angled or bare
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # https:, mailto:, ... and anchors within the page
        targets.append(unquote(target.split("#", 1)[0]))
    return targets


def test_link_parser_finds_links_and_skips_urls_anchors_and_code():
    text = ("see [a](docs/a.md#part) and ![b](img/b.png \"title\"), [c](https://x.org/y.md), [d](#top)\n"
            "```\n[e](not/a/link.md)\n```\n[f](<with space.md>)\n")
    assert relative_links(text) == ["docs/a.md", "img/b.png", "with space.md"]


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_to_tracked_files(doc):
    tracked = _tracked()
    tracked_dirs = {str(Path(f).parent) for f in tracked}
    broken = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path = (doc.parent / target).resolve()
        try:
            rel = str(path.relative_to(ROOT))
        except ValueError:
            broken.append(f"{target} (outside the repository)")
            continue
        if rel not in tracked and rel.rstrip("/") not in tracked_dirs:
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links files git does not track: {', '.join(broken)}"


def test_the_readme_links_every_docs_page():
    """A page under docs/ that nothing links is a page no reader finds."""
    linked = {(ROOT / t).resolve() for t in relative_links((ROOT / "README.md").read_text(encoding="utf-8"))}
    for doc in _documents()[1:]:
        linked |= {(doc.parent / t).resolve() for t in relative_links(doc.read_text(encoding="utf-8"))}
    orphans = [str(p.relative_to(ROOT)) for p in _documents()[1:] if p.resolve() not in linked]
    assert not orphans, f"no link leads to {', '.join(orphans)}"
