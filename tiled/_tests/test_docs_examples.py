"""The examples of the how-to pages run.

For each page under ``docs/source/how-to`` and ``docs/source/tutorials``, the ```` ```python ```` blocks are joined in order
and executed in one namespace, with ``http://localhost:8000`` pointing at a live demo server.
Lines outside those blocks are blanked rather than dropped, so a traceback names the line of
the page itself. Blocks fenced as ```` ```{code-block} python ```` or ```` ```sh ```` are
illustrations (a blocking server, a shell command) and are not run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "source"
# The how-to guides and the client tutorials; each index.md only lists them.
SECTIONS = ("how-to", "tutorials")
PAGES = [
    page
    for section in SECTIONS
    if (DOCS / section).is_dir()
    for page in sorted((DOCS / section).glob("*.md"))
    if page.name != "index.md"
]
IDS = [f"{page.parent.name}/{page.stem}" for page in PAGES]  # names repeat across sections
PLACEHOLDER_URL = "http://localhost:8000"
OPENING, CLOSING = "```python", "```"


def executable_source(text: str) -> str:
    """The page's python blocks, every other line blank, so line numbers match the page."""
    lines, inside = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        fence = line.rstrip()
        if not inside and fence == OPENING:
            inside, line = True, ""
        elif inside and fence == CLOSING:
            inside, line = False, ""
        elif inside and fence.startswith(CLOSING):
            raise AssertionError(f"line {number}: a fence inside a python block")
        lines.append(line if inside else "")
    assert not inside, "a python block is never closed"
    return "\n".join(lines)


def test_block_extraction_keeps_line_numbers():
    page = "text\n```python\nx = 1\n```\n```sh\nrm -rf /\n```\n```python\ny = x\n```\n"
    source = executable_source(page)
    assert source.splitlines()[2] == "x = 1" and source.splitlines()[8] == "y = x"
    assert "rm" not in source


@pytest.mark.skipif(not PAGES, reason="the documentation sources are not present")
def test_every_guide_has_examples():
    without = [
        f"{p.parent.name}/{p.name}" for p in PAGES if not executable_source(p.read_text()).strip()
    ]
    assert not without, f"pages without runnable examples: {without}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_page_examples_run(page, demo_server, tmp_path, monkeypatch):
    source = executable_source(page.read_text())
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    source = source.replace(PLACEHOLDER_URL, demo_server.url)
    namespace = {"__name__": f"docs_{page.parent.name.replace('-', '_')}_{page.stem}"}
    exec(compile(source, str(page), "exec"), namespace)
