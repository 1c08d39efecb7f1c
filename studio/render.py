"""Prompts and responses as a rater reads them: markdown rendered, raw HTML shown as text, and the raw text beside it.

A response is judged on the text a model wrote, so nothing in it may act or disappear: markdown-it renders it with
raw HTML turned off (a ``<script>`` tag reads as text, exactly as written), images off (no remote fetch from a
rater's browser), and unsafe link schemes refused; nh3 (ammonia) then keeps only the tags and attributes markdown
produces, as a second line of defence. Each pane also carries the raw text, escaped; the page shows one or the other
(``static/studio.js``, key M), so a rater can always check what the rendering did.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable(["table", "strikethrough"])
_MARKDOWN.disable("image")
_TAGS = {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "s", "del", "code", "pre", "blockquote",
         "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td"}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "code": {"class"}, "th": {"style"}, "td": {"style"}}
# Its label comes from studio.css (raw text or rendered, whichever is not showing); studio.js does the toggling.
RAW_TOGGLE = '<button type="button" class="concord-raw-toggle" title="Raw text or rendered markdown (M)"></button>'
ROLES = {"system": "System prompt", "user": "User", "assistant": "Assistant"}


def markdown_html(text: str) -> str:
    """``text`` as sanitised HTML: markdown rendered, any HTML in it shown as text, links opening in a new tab."""
    rendered = _MARKDOWN.render(text or "")
    return nh3.clean(
        rendered,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        filter_style_properties={"text-align"},
    )


@lru_cache(maxsize=512)  # k raters read each pair: most renders repeat one made a moment ago
def _both(text: str) -> str:
    """The rendered and the raw form of ``text``; the page's raw-text toggle decides which one shows."""
    raw = html.escape(text or "", quote=False)
    return f'<div class="concord-md">{markdown_html(text)}</div><pre class="concord-rawtext">{raw}</pre>'


def pane_html(title: str, text: str) -> str:
    """One response: its title, then its text scrolling inside a pane of its own."""
    return (
        f'<div class="concord-pane"><div class="concord-pane-title">{html.escape(title)}{RAW_TOGGLE}</div>'
        f'<div class="concord-pane-body">{_both(text)}</div></div>'
    )


def conversation_html(messages: Sequence[dict[str, Any]]) -> str:
    """A prompt (one or more turns), each turn titled by its role, in a pane that scrolls when long."""
    turns = []
    for message in messages:
        role = str(message.get("role", "user"))
        title, kind = html.escape(ROLES.get(role, role.capitalize())), role if role in ROLES else "other"
        turns.append(
            f'<div class="concord-turn concord-turn-{kind}"><div class="concord-turn-role">{title}</div>'
            f"{_both(str(message.get('content', '')))}</div>"
        )
    return f'<div class="concord-pane concord-prompt-pane"><div class="concord-pane-body">{"".join(turns)}</div></div>'
