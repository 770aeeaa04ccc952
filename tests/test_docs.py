"""The README and the documentation site: the README stays short, its relative links and anchors resolve (with
MkDocs' slug rules), it lists every command and keeps CI's test command; the strict MkDocs build passes.

Every page of ``docs/`` being in ``mkdocs.yml``'s nav, and every link and anchor between the pages, is checked by
the strict build itself (``validation`` in ``mkdocs.yml``), so only the README, which MkDocs does not build, is
checked link by link here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200
TEST_COMMAND = "python -m pytest -q -n 2"

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(?:<([^<>\n]*)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")


def markdown_links(text: str) -> list[str]:
    """The targets of the inline links and images of a Markdown text, outside code blocks and code spans."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return [angled or bare for angled, bare in _LINK.findall(text)]


def heading_ids(path: Path) -> set[str]:
    """The anchors MkDocs gives the headings of a Markdown file: Python-Markdown's ``toc`` extension, its default
    ``slugify``, duplicates numbered as it numbers them."""
    markdown = pytest.importorskip("markdown", reason="the anchors are computed with Python-Markdown's toc extension")
    md = markdown.Markdown(extensions=["toc", "tables", "fenced_code", "attr_list"])
    md.convert(path.read_text(encoding="utf-8"))
    ids: set[str] = set()

    def walk(tokens):
        for token in tokens:
            ids.add(token["id"])
            walk(token["children"])

    walk(md.toc_tokens)
    return ids


def _relative_links(path: Path) -> list[str]:
    out = []
    for target in markdown_links(path.read_text(encoding="utf-8")):
        scheme = urlsplit(target).scheme
        if scheme or target.startswith("//"):
            continue  # http(s), mailto: not checked offline
        out.append(target)
    return out


def test_markdown_links_helper():
    text = ("[a](docs/x.md#y) ![img](p.png) `[not](a.md)` [b](https://e.org) [c](#top)\n"
            "```bash\n[no](code.md)\n```\n[d](<docs/with space.md>)")
    assert markdown_links(text) == ["docs/x.md#y", "p.png", "https://e.org", "#top", "docs/with space.md"]


def test_heading_ids_follow_mkdocs_slugs(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Bundled weights: what `--policy case2` runs\n\n## The policy: grounder + MLP\n\n"
                    "## Data: V6 and LeRobot v3.0\n\n## Data: V6 and LeRobot v3.0\n", encoding="utf-8")
    assert heading_ids(page) == {"bundled-weights-what-policy-case2-runs", "the-policy-grounder-mlp",
                                 "data-v6-and-lerobot-v30", "data-v6-and-lerobot-v30_1"}


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move the detail into a page of docs/")


def test_readme_relative_links_resolve():
    links = _relative_links(README)
    assert links, "README.md links into docs/"
    problems = []
    for target in links:
        parts = urlsplit(target)
        file = README if not parts.path else (README.parent / unquote(parts.path)).resolve()
        if not file.exists():
            problems.append(f"{target}: {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file} does not exist")
            continue
        if not file.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
            continue
        if parts.fragment:
            if file.suffix != ".md":
                problems.append(f"{target}: an anchor into a file that is not Markdown")
            elif unquote(parts.fragment) not in heading_ids(file):
                problems.append(f"{target}: no heading of {file.relative_to(ROOT)} has the anchor #{parts.fragment}")
    assert not problems, "README.md:\n" + "\n".join(problems)


def test_readme_keeps_the_ci_test_command():
    lines = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]
    assert TEST_COMMAND in lines, f"README.md must hold the line {TEST_COMMAND!r} (CI's test command)"
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_lists_every_command():
    text = README.read_text(encoding="utf-8")
    tools = sorted(p.stem for p in (ROOT / "sim").glob("*.py") if re.search(r"^def main\(", p.read_text(), re.M))
    assert "eval" in tools
    missing = [t for t in tools if not re.search(rf"python -m sim\.{t}\b", text)]
    assert not missing, f"README.md's command table lacks: {', '.join('python -m sim.' + t for t in missing)}"


def test_mkdocs_strict_build(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings-python is not installed")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    detail = "\n".join(warnings or proc.stderr.splitlines()[-30:])
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + detail
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "foundations" / "index.html").exists()
