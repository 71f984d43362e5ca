"""MkDocs hooks: the site's home page is README.md and its changelog page is CHANGELOG.md.

Both files stay at the top of the repository, where a person browsing it reads them; their links
into docs/ (``docs/model.md``) and to each other are made relative to the site's pages here, so
one text serves both. A link that fits neither is left as it is, for ``mkdocs build --strict`` to
refuse when it leads nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# the site's page -> the top-level file it shows
SOURCES = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}
PAGES = {source: page for page, source in SOURCES.items()}
# a Markdown link's target, unless it is a URL or an anchor of the same page
LINK = re.compile(r"\]\((?![a-z]+:|#)([^)\s]+)\)")
CODE = re.compile(r"`[^`\n]+`")


def relink(text: str) -> str:
    """A top-level file's links, as the site's pages see them."""

    def page(match: re.Match[str]) -> str:
        path, sep, anchor = match.group(1).partition("#")
        path = path.removeprefix("docs/") if path.startswith("docs/") else PAGES.get(path, path)
        return f"]({path}{sep}{anchor})"

    # GitHub needs `a\|b` for a pipe in a table's code span; Python-Markdown takes it bare there.
    text = CODE.sub(lambda code: code.group(0).replace("\\|", "|"), text)
    return LINK.sub(page, text)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    source = SOURCES.get(page.file.src_uri)
    if source is None:
        return markdown
    return relink((ROOT / source).read_text(encoding="utf-8"))
