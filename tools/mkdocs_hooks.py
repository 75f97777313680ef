"""MkDocs hook (mkdocs.yml `hooks:`): generated parts of the docs, made from the code when the site is built.

`<!-- yolo-opt help: keys -->` in a page becomes yolo-opt's key table exactly as `yolo-opt help` prints it
(`yolo_opt.options.help_table()`), so the docs' table is never written by hand and cannot drift from the options
(tests/test_docs.py checks it against the real CLI's output).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS_MARKER = "<!-- yolo-opt help: keys -->"


def key_table_markdown() -> str:
    """The fenced block that replaces KEYS_MARKER: `yolo-opt help`'s key table, verbatim."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # a checkout without an install builds its own docs
    from yolo_opt.options import help_table

    return f"```text\n{help_table()}\n```"


def render(markdown: str) -> str:
    """A page's Markdown with every generated part filled in."""
    return markdown.replace(KEYS_MARKER, key_table_markdown()) if KEYS_MARKER in markdown else markdown


def on_page_markdown(markdown: str, **kwargs) -> str:
    return render(markdown)
