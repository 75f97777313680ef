"""The README as a front door and the MkDocs site behind it: the set-up commands CI runs, links that resolve, the key
table generated from the options (equal to what `yolo-opt help` prints), and a strict build."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEMO = "pip install -e . -c constraints.txt && yolo-opt demo"
TESTS = 'pip install -e ".[dev]" -c constraints.txt && ruff check . && python -m pytest -q'

sys.path.insert(0, str(ROOT / "tools"))
import mkdocs_hooks  # noqa: E402


def _fenced(text: str, lang: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"```{lang}\n(.*?)```", text, re.S)]


def test_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    blocks = _fenced(text, "bash")
    assert blocks[0] == DEMO  # the first set-up command, as the README has always written it
    after = text.split("Run the tests", 1)[1]
    assert _fenced(after, "bash")[0] == TESTS
    assert TESTS in (ROOT / ".ci" / "run").read_text().splitlines()  # CI runs the README's line exactly


def test_readme_links_resolve():
    text = README.read_text()
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+://", t)]
    assert targets
    missing = [t for t in targets if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, missing


def test_docs_key_table_is_what_help_prints():
    from yolo_opt.options import help_table

    out = run_cli("help", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = out.stdout.split("see 'yolo cfg'):\n", 1)[1].split("\n\nenvironment:", 1)[0]
    usage = (ROOT / "docs" / "usage.md").read_text()
    assert mkdocs_hooks.KEYS_MARKER in usage  # the page holds no hand-written table, only the marker
    rendered = mkdocs_hooks.render(usage)
    generated = rendered.split("```text\n", 1)[1].split("\n```", 1)[0]
    assert generated == printed == help_table()


def test_mkdocs_build_is_strict_and_clean(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # no -q: mkdocs counts strict-mode warnings only while they are logged
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    page = (tmp_path / "site" / "usage" / "index.html").read_text()
    assert "prune_target" in page and mkdocs_hooks.KEYS_MARKER not in page


def _slug(title: str) -> str:
    """Python-Markdown's toc slug (what MkDocs uses for a heading's anchor)."""
    value = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def test_code_links_to_docs_resolve():
    """Docstrings state the rule and link the evidence (docs/PAGE.md#section): every such link names a real heading."""
    links = set()
    for path in (ROOT / "yolo_opt").rglob("*.py"):
        links |= {(m[0], m[1], path.name) for m in re.findall(r"docs/([\w-]+\.md)#([\w-]+)", path.read_text())}
    assert links
    bad = []
    for page, anchor, where in sorted(links):
        file = ROOT / "docs" / page
        headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)} if file.exists() else set()
        if anchor not in headings:
            bad.append(f"{where}: docs/{page}#{anchor}")
    assert not bad, bad
