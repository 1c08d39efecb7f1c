"""Compare at 1280x800 in a real headless Chromium: one screen, the keyboard all the way, markdown that stays inert.

What the page sends is checked where it lands: in the database, against what the rater meant in display terms.
"""

import re

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from storage.accounts import create_user
from storage.db import write_session
from storage.models import Assignment, Campaign, Judgment, Pair, Response, UserCreate
from studio.service import StudioService
from studio.validation import flip
from tests.browser.conftest import PASSWORD, log_in, screenshot
from tests.browser.test_studio import PAYLOADS, new_campaign, open_campaign, rows, wait_for

pytestmark = pytest.mark.browser

RUBRIC = ["accuracy", "clarity", "safety"]
# Everything a rater needs for one judgment, all of it inside the 1280x800 viewport at once.
ON_SCREEN = ["#compare-prompt", "#compare-left", "#compare-right", "#compare-choice", "#compare-score-0",
             "#compare-score-2", "#compare-reasoning", "#compare-confidence", "#compare-submit"]  # fmt: skip
WATCH_SCROLL = "window.__scrolls = 0; window.addEventListener('scroll', () => window.__scrolls++)"
KEY = "#compare-draft-key textarea"  # "<user>:judgment:<assignment>" of the item on screen
CODE = """Here is a version that keeps the order:

```python
def dedupe(items):
    seen = set()
    return [x for x in items if not (x in seen or seen.add(x))]
```

| input | output |
|---|---|
| `[1, 1, 2]` | `[1, 2]` |
"""


def new_rater(studio, name: str) -> int:
    """A rater who already accepted the demo campaign's consent, so the page opens on its first item."""
    with write_session(studio["engine"]) as session, session.begin():
        rater = create_user(session=session, user=UserCreate(username=name, password=PASSWORD)).id
        demo = session.exec(select(Campaign).where(Campaign.name == "demo")).one()
    StudioService(studio["engine"]).accept_consent(rater, demo.id, demo.consent_version)
    return rater


def set_campaign(studio, campaign_id: int, **fields) -> None:
    with write_session(studio["engine"]) as session, session.begin():
        campaign = session.get(Campaign, campaign_id)
        for name, value in fields.items():
            setattr(campaign, name, value)


def outside_viewport(page, selectors: list[str]) -> list[str]:
    """Those of ``selectors`` not wholly inside the viewport (or not shown at all)."""
    return page.evaluate(
        """(selectors) => selectors.filter((s) => {
             const r = document.querySelector(s)?.getBoundingClientRect();
             return !r || r.height === 0 || r.top < 0 || r.bottom > innerHeight || r.left < 0 || r.right > innerWidth;
           })""",
        selectors,
    )


def assert_ready_on_top(page) -> None:
    """The item on screen is ready: the page at its top, the focus on the item (not in a text field)."""
    expect(page.locator("#compare-task")).to_be_focused()
    assert page.evaluate("[window.scrollY, window.__scrolls]") == [0, 0]
    assert outside_viewport(page, ON_SCREEN) == []


def test_a_rater_judges_ten_items_in_a_row_with_the_keyboard_only_and_no_scrolling(studio, browser, tmp_path):
    records = [
        {"prompt": f"Question {n}: how do I {topic}?", "response_a": f"Answer A{n}: {topic} carefully, step by step.",
         "response_b": f"Answer B{n}: just {topic}."}
        for n, topic in enumerate(["sort a list", "read a file", "parse JSON", "time code", "zip lists", "copy a dict",
                                   "join paths", "round money", "test a function", "log errors", "rename a file"])
    ]  # fmt: skip
    campaign_id = new_campaign(studio, tmp_path, "keyboard", records)
    set_campaign(studio, campaign_id, rubric=RUBRIC, calibration_rate=0.0, min_reasoning_chars=30, consent_text="")
    rater = new_rater(studio, "kim")
    page = log_in(browser, studio["url"], "kim")
    page.locator("#compare-task").wait_for(state="visible")  # the page loaded its campaigns and the first item
    open_campaign(page, "keyboard")
    page.evaluate(WATCH_SCROLL)
    page.wait_for_timeout(2000)  # time on task counts from when the item was first shown, across the reload below
    first_key = page.locator(KEY).input_value()
    page.reload()
    page.locator("#compare-task").wait_for(state="visible")  # the first campaign's item, once the page settled
    open_campaign(page, "keyboard")  # the page opens on the first campaign; the item is still kim's
    expect(page.locator(KEY)).to_have_value(first_key)
    page.locator("#compare-task").focus()  # where the choice of a campaign by mouse left it: the item
    page.evaluate(WATCH_SCROLL)
    assert_ready_on_top(page)
    screenshot(page, "compare-keyboard")

    intended = {}
    for n in range(10):
        key = page.locator(KEY).input_value()
        choice, confidence = n % 5 + 1, (n + 2) % 5 + 1  # keys 1-5: -2 .. +2 in display terms
        scores = {"accuracy": n % 5 + 1, "clarity": (n * 3) % 5 + 1} | ({} if n % 2 else {"safety": 4})
        page.keyboard.press(str(choice))
        if n % 3:  # confidence first, then the reasoning, submitted from inside the box
            page.keyboard.press(f"Shift+Digit{confidence}")
        for letter, name in zip("asd", RUBRIC, strict=True):
            page.keyboard.press(letter)
            page.keyboard.press(str(scores.get(name, 0)))  # 0: left not rated
        page.keyboard.press("r")
        expect(page.locator("#compare-reasoning textarea")).to_be_focused()
        page.keyboard.type(f"Item {n}: the chosen side answers the question and explains why.")
        if n % 3 == 0:  # out of the reasoning with Esc; the keys act again
            page.keyboard.press("Escape")
            expect(page.locator("#compare-task")).to_be_focused()
            page.keyboard.press(f"Shift+Digit{confidence}")
        expect(page.locator("#compare-confidence input").nth(confidence - 1)).to_be_checked()
        expect(page.locator("#compare-choice input").nth(choice - 1)).to_be_checked()
        if n == 0:
            screenshot(page, "compare-keyboard-filled")
        page.keyboard.press("Control+Enter")
        expect(page.locator(KEY)).not_to_have_value(key)  # the 11th item follows the 10th
        expect(page.locator("#compare-status")).to_contain_text("Saved")
        assert_ready_on_top(page)
        expect(page.locator("#compare-choice input:checked")).to_have_count(0)
        intended[int(key.rsplit(":", 1)[1])] = (choice - 3, scores, confidence)
    # What a submit does not resend stays as it was: the panels, the guidelines and their version.
    expect(page.locator("#compare-progress")).to_contain_text("10 judged today")
    expect(page.locator("#compare-guidelines")).to_contain_text("Guidelines (version 1)")
    expect(page.locator("#compare-submit")).to_be_visible()

    mine = wait_for(lambda: (found := rows(studio["engine"], select(Judgment).where(Judgment.rater_id == rater)))
                    and len(found) == 10 and found, "kim's ten judgments")  # fmt: skip
    assert page.evaluate("[window.scrollY, window.__scrolls]") == [0, 0]
    for judgment in mine:
        (assignment,) = rows(studio["engine"], select(Assignment).where(
            Assignment.rater_id == rater, Assignment.pair_id == judgment.pair_id))  # fmt: skip
        choice, scores, confidence = intended[assignment.id]
        assert (judgment.preference, judgment.left) == (flip(choice, assignment.left), assignment.left)
        assert (judgment.criteria, judgment.confidence) == (scores, confidence)
    first = min(mine, key=lambda judgment: judgment.id)
    assert first.time_on_task_s >= 2.0  # the reload did not restart the clock
    page.context.close()


def test_a_refused_submit_says_why_and_keeps_the_raters_text(studio, browser):
    """The submit is one request outside Gradio's queue: a refusal is said on the status line, the form stays."""
    rater = new_rater(studio, "ria")
    page = log_in(browser, studio["url"], "ria")
    page.locator("#compare-task").wait_for(state="visible")
    key = page.locator(KEY).input_value()
    page.keyboard.press("2")
    page.keyboard.press("r")
    page.keyboard.type("Too short.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#compare-status")).to_contain_text("Not submitted: Reasoning needs at least 30 characters")
    expect(page.locator("#compare-reasoning textarea")).to_have_value("Too short.")
    expect(page.locator("#compare-choice input").nth(1)).to_be_checked()
    assert rows(studio["engine"], select(Judgment).where(Judgment.rater_id == rater)) == []
    screenshot(page, "compare-refused")
    page.locator("#compare-reasoning textarea").focus()
    page.keyboard.type(" The left one answers the question that was asked.")
    page.keyboard.press("Control+Enter")
    expect(page.locator(KEY)).not_to_have_value(key)
    expect(page.locator("#compare-status")).to_contain_text("Saved")
    wait_for(lambda: rows(studio["engine"], select(Judgment).where(Judgment.rater_id == rater)), "ria's judgment")
    page.context.close()


def test_a_long_markdown_response_with_code_renders_scrolls_in_its_pane_and_stays_inert(studio, browser, tmp_path):
    payload = " ".join([*PAYLOADS, "${window.__xss=4}", '<a href="javascript:window.__xss=5">a</a>'])
    long_text = CODE + "\n\n" + "\n\n".join(f"Paragraph {n}: more detail, {payload}" for n in range(40))
    records = [{"prompt": f"Remove duplicates, keep order. {payload}", "response_a": long_text, "response_b": CODE}]
    new_campaign(studio, tmp_path, "markdown", records)
    new_rater(studio, "lin")
    page = log_in(browser, studio["url"], "lin")
    page.locator("#compare-task").wait_for(state="visible")  # the page loaded its campaigns and the first item
    open_campaign(page, "markdown")
    page.evaluate(WATCH_SCROLL)
    long_side = "#compare-left" if "Paragraph 39" in page.locator("#compare-left").text_content() else "#compare-right"
    pane = page.locator(f"{long_side} .concord-pane-body")
    expect(page.locator(f"{long_side} pre code.language-python")).to_contain_text("def dedupe(items):")
    expect(page.locator(f"{long_side} table td code").first).to_have_text("[1, 1, 2]")
    expect(page.locator(f"{long_side} .concord-md")).to_contain_text(f"Paragraph 39: more detail, {payload}")
    assert pane.evaluate("(p) => p.scrollHeight > p.clientHeight + 500")  # long: it scrolls inside its pane ...
    pane.evaluate("(p) => { p.scrollTop = p.scrollHeight; }")
    assert page.evaluate("[window.scrollY, window.__scrolls]") == [0, 0]  # ... and the page stays put
    assert outside_viewport(page, ON_SCREEN) == []
    screenshot(page, "compare-markdown")

    page.keyboard.press("m")  # raw text: exactly what the model wrote
    raw = page.locator(f"{long_side} .concord-rawtext")
    expect(raw).to_be_visible()
    expect(page.locator(f"{long_side} .concord-md")).to_be_hidden()
    pair = rows(studio["engine"], select(Pair).join(Campaign).where(Campaign.name == "markdown"))[0]
    both = [pair.response_a_id, pair.response_b_id]
    texts = rows(studio["engine"], select(Response.text).where(Response.id.in_(both)))
    assert raw.text_content() in texts and "Paragraph 39" in raw.text_content()
    page.keyboard.press("m")
    expect(page.locator(f"{long_side} .concord-md")).to_be_visible()

    page.wait_for_timeout(500)  # an image error handler would have fired by now
    assert page.evaluate("window.__xss") is None
    assert page.locator("#compare-task :is(img, script, a[href^='javascript'], a[href^='data'])").count() == 0
    page.context.close()


def test_keys_for_help_and_a_criterion_and_the_campaign_picker_closing_on_tab(studio, browser):
    page = log_in(browser, studio["url"], "ada")
    page.locator("#compare-task:visible, #compare-consent:visible").first.wait_for()
    if page.locator("#compare-consent").is_visible():
        page.locator("#compare-consent-accept").click()
    page.locator("#compare-task").wait_for(state="visible")
    page.locator("#concord-campaign input").focus()
    expect(page.get_by_role("option").first).to_be_visible()
    page.keyboard.press("Tab")  # past the campaign picker: its list closes
    expect(page.get_by_role("option")).to_have_count(0)

    page.locator("#compare-task").focus()
    page.keyboard.press("?")
    expect(page.locator("#compare-help")).to_be_visible()
    expect(page.locator("#compare-help")).to_contain_text("Esc leaves the box")
    screenshot(page, "compare-keys")
    page.keyboard.press("Escape")
    expect(page.locator("#compare-help")).to_be_hidden()
    page.keyboard.press("s")  # arms the 2nd criterion: the next digit scores it, not the choice
    expect(page.locator("#compare-score-1")).to_have_class(re.compile("concord-armed"))
    page.keyboard.press("4")
    expect(page.locator("#compare-score-1 input").nth(4)).to_be_checked()
    expect(page.locator("#compare-choice input:checked")).to_have_count(0)
    page.keyboard.press("s")
    page.keyboard.press("0")  # back to not rated
    expect(page.locator("#compare-score-1 input").nth(0)).to_be_checked()
    page.context.close()
