"""The README and docs/: the generated parameters page is current, the README stays one
screen, every relative link leads to a file, and the README keeps the command CI runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_README_BYTES = 12_000

FENCED = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[^\n]*$", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.MULTILINE)
HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def load_make_docs():
    path = REPO / "scripts" / "make_docs.py"
    spec = importlib.util.spec_from_file_location("make_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_links(text: str) -> list[str]:
    """The link targets in markdown ``text`` that are paths in this repository: outside code,
    without http(s) (or any scheme) and without the ``#anchor``."""
    text = CODE_SPAN.sub("", FENCED.sub("", text))
    targets = INLINE_LINK.findall(text) + REFERENCE.findall(text) + HTML.findall(text)
    out = []
    for target in targets:
        target = target.strip()
        if not target or target.startswith("#") or target.startswith("//"):
            continue
        if SCHEME.match(target):
            continue
        path = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if path:
            out.append(path)
    return out


def test_parameters_page_is_current():
    make_docs = load_make_docs()
    page = REPO / "docs" / "parameters.md"
    assert page.is_file(), "docs/parameters.md is missing: run python scripts/make_docs.py"
    assert page.read_text(encoding="utf-8") == make_docs.parameters_markdown(), (
        "docs/parameters.md is out of date: run python scripts/make_docs.py"
    )


def test_readme_is_one_screen():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, (
        f"README.md is {size} bytes, more than {MAX_README_BYTES}: move details to docs/"
    )


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_lead_to_files(path):
    broken = [
        link
        for link in relative_links(path.read_text(encoding="utf-8"))
        if not (path.parent / link).exists()
    ]
    assert not broken, f"{path.relative_to(REPO)} links to files that do not exist: {broken}"


def test_readme_keeps_the_test_command():
    assert "bash scripts/test.sh" in README.read_text(encoding="utf-8")


def test_link_finder_sees_links_and_skips_the_rest():
    text = (
        '[a](docs/a.md) ![b](images/b.png "title") [c](https://x.org/c.md) [d](#top)\n'
        "[e](docs/e.md#part) `[f](not/code.md)`\n\n```\n[g](not/fenced.md)\n```\n"
        '[ref]: docs/ref.md\n<img src="images/i.png">\n'
        "[![badge](https://x.org/b.svg)](https://x.org/)\n"
    )
    assert sorted(relative_links(text)) == [
        "docs/a.md",
        "docs/e.md",
        "docs/ref.md",
        "images/b.png",
        "images/i.png",
    ]
