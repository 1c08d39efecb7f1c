"""Prompts and responses as raters read them: markdown rendered, nothing in them able to act."""

import html
import re

import pytest

from studio.render import conversation_html, markdown_html, pane_html
from studio.tabs.rater import count_line
from studio.validation import reasoning_length

PAYLOADS = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=2">',
    "[x](javascript:window.__xss=3)",
    "${window.__xss=4}",
    '<a href="javascript:alert(1)">a</a>',
    "[y](data:text/html;base64,PHNjcmlwdD4=)",
    "![pixel](https://tracker.example/p.png)",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_html_and_unsafe_links_in_a_response_stay_text(payload):
    shown = markdown_html(f"Look: {payload}")
    tags = re.findall(r"<\s*([a-zA-Z]+)([^>]*)>", shown)
    assert {name for name, _ in tags} <= {"p", "a"}, shown
    assert all(attributes.strip().startswith('href="http') or not attributes for _, attributes in tags), shown
    assert "window.__xss" not in shown or html.unescape(re.sub(r"<[^>]+>", "", shown)).strip() == f"Look: {payload}"


def test_markdown_renders_code_lists_and_tables_and_links_open_safely():
    text = "Use `dict`:\n\n```python\nif a < b:\n    print('<b>')\n```\n\n- one\n- two\n\n"
    text += "| a | b |\n|---|--:|\n| 1 | 2 |\n"
    shown = markdown_html(text + "\n[docs](https://docs.python.org)")
    assert '<pre><code class="language-python">if a &lt; b:' in shown and "<li>one</li>" in shown
    assert '<td style="text-align:right">2</td>' in shown and "<code>dict</code>" in shown
    assert 'href="https://docs.python.org"' in shown and 'rel="noopener noreferrer nofollow"' in shown


def test_a_pane_carries_the_raw_text_escaped_and_a_prompt_titles_its_turns():
    pane = pane_html("Left response", "**bold** <b>x</b>")
    assert (
        "<strong>bold</strong>" in pane and '<pre class="concord-rawtext">**bold** &lt;b&gt;x&lt;/b&gt;</pre>' in pane
    )
    prompt = conversation_html([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert prompt.index("System prompt") < prompt.index("Be brief.") < prompt.index("User") < prompt.index("Hi")


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("", 0),
        ("  ok  ", 2),
        ("a" + " " * 40 + "b", 3),
        ("a\n\n\n\tb", 3),
        ("a\u200b\u200b\u200bb", 2),
        ("a\xa0 b", 3),
    ],
)
def test_padding_never_counts_toward_the_reasoning_minimum(text, length):
    assert reasoning_length(text) == length
    assert count_line(text, 3).startswith(f"{length} characters")


def test_no_item_on_screen_hides_the_calibration_feedback_of_the_last_one():
    import gradio as gr

    from studio.tabs.consent import ConsentPanel
    from studio.tabs.rater import NOTHING_LEFT, RaterHeader, TaskSlots

    with gr.Blocks():
        header, consent = RaterHeader("t", "waiting", "Next"), ConsentPanel("t")
        feedback = gr.Markdown("**Calibration item:** expected Tie", visible=True)
        parts = (gr.State(None), header.status, gr.Column(), gr.Button(), gr.Textbox(), header, consent, feedback)
        slots = TaskSlots("judgment", *parts)
    shown = slots.nothing(NOTHING_LEFT["judgment"])
    assert shown[feedback]["visible"] is False and shown[header.status] == NOTHING_LEFT["judgment"]
