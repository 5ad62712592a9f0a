"""README rendering for plugin pages: Markdown to HTML, then sanitised so nothing runs."""

from __future__ import annotations

from html import escape

import nh3
from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark", {"html": True, "linkify": False}).enable("table")
# nh3's defaults already drop <script>, event handlers and javascript: URLs; we also
# drop inline styles and make every link nofollow so a README cannot lend it rank.
_CLEAN_ATTRIBUTES = {
    "*": {"title", "align"}, "a": {"href"}, "img": {"src", "alt", "width", "height"},
    "code": {"class"}, "th": {"align"}, "td": {"align"},
}


def render_readme(text: str, content_type: str) -> str:
    """Safe HTML for a README of the given ``Description-Content-Type``."""
    if not text.strip():
        return "<p><em>This plugin has no README.</em></p>"
    if content_type.split(";")[0].strip().lower() == "text/markdown":
        html = _MD.render(text)
    else:
        html = f"<pre>{escape(text)}</pre>"
    return nh3.clean(
        html, attributes=_CLEAN_ATTRIBUTES, link_rel="nofollow noopener noreferrer",
        url_schemes={"http", "https", "mailto"},
    )
