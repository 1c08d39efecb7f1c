"""History at 1280x800 in a real headless Chromium: a rater reopens a judgment from their history and revises it.

What the page sends is checked where it lands: the revision is a new row superseding the original, which stays.
"""

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from storage.models import Judgment
from studio.validation import flip
from tests.browser.conftest import log_in, screenshot
from tests.browser.test_compare import new_rater, set_campaign
from tests.browser.test_studio import new_campaign, open_campaign, rows, wait_for

pytestmark = pytest.mark.browser

FIRST = "The left answer explains the steps and warns about the edge case."
REVISED = "On a second reading the right answer is the correct one; the left one misnames the function."


def test_a_rater_reopens_a_judgment_from_history_and_revises_choice_and_reasoning(studio, browser, tmp_path):
    records = [
        {"prompt": f"How do I {topic} in Python?", "response_a": f"To {topic}, use the standard library.",
         "response_b": f"You cannot {topic} in Python."}
        for topic in ("flatten a nested list", "read a CSV file", "measure elapsed time")
    ]  # fmt: skip
    campaign_id = new_campaign(studio, tmp_path, "history", records)
    set_campaign(studio, campaign_id, rubric=["accuracy"], calibration_rate=0.0, min_reasoning_chars=20)
    set_campaign(studio, campaign_id, consent_text="")
    rater = new_rater(studio, "hana")
    page = log_in(browser, studio["url"], "hana")
    page.locator("#compare-task").wait_for(state="visible")
    open_campaign(page, "history")
    page.locator("#compare-task").focus()

    # Judge the item on screen with the keyboard: left better, accuracy 4, a reasoning, submit.
    prompt_text = page.locator("#compare-prompt").inner_text()
    topic = next(r["prompt"] for r in records if r["prompt"] in prompt_text).split("do I ")[1].split(" in")[0]
    page.keyboard.press("2")
    page.keyboard.press("a")
    page.keyboard.press("4")
    page.keyboard.press("r")
    page.keyboard.type(FIRST)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#compare-status")).to_contain_text("Saved")
    (original,) = wait_for(
        lambda: rows(studio["engine"], select(Judgment).where(Judgment.rater_id == rater)), "judgment"
    )

    # History: search by a word of the prompt, open the result from the list, all from the keyboard.
    page.get_by_role("tab", name="History").click()
    expect(page.locator("#history-list label")).to_have_count(1)
    page.keyboard.press("/")
    expect(page.locator("#history-search textarea")).to_be_focused()
    page.keyboard.type(topic.split()[-1].upper())  # any case
    page.keyboard.press("Enter")
    expect(page.locator("#history-status")).to_have_text("1 item")
    page.keyboard.press("Escape")
    page.keyboard.press("o")
    page.keyboard.press("Space")
    page.locator("#history-task").wait_for(state="visible")
    expect(page.locator("#history-choice input").nth(1)).to_be_checked()  # left better, as judged
    expect(page.locator("#history-score-0 input").nth(4)).to_be_checked()  # accuracy 4
    expect(page.locator("#history-reasoning textarea")).to_have_value(FIRST)
    expect(page.locator("#history-prompt")).to_contain_text(topic)
    assert page.locator("#history-task").get_by_text("expected", exact=False).count() == 0

    # Revise: right better, a new reasoning, accuracy 2; Ctrl+Enter saves it as a new version.
    page.keyboard.press("4")
    page.keyboard.press("a")
    page.keyboard.press("2")
    page.keyboard.press("r")
    page.keyboard.press("Control+a")
    page.keyboard.type(REVISED)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#history-status")).to_contain_text("Saved as version 2")
    expect(page.locator("#history-list label")).to_have_count(1)
    expect(page.locator("#history-list label").first).to_contain_text("Right better · revised")
    expect(page.locator("#history-choice input").nth(3)).to_be_checked()
    expect(page.locator("#history-task")).to_be_focused()  # out of the reasoning, so the keys act again
    page.keyboard.press("?")
    expect(page.locator("#history-help")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#history-help")).to_be_hidden()
    screenshot(page, "history")  # docs/images/history.png

    mine = select(Judgment).where(Judgment.rater_id == rater).order_by(Judgment.id)
    old, new = wait_for(lambda: (found := rows(studio["engine"], mine)) and len(found) == 2 and found, "the revision")
    assert (old.id, old.supersedes_id, old.reasoning) == (original.id, None, FIRST)  # the original, as it was
    assert old.preference == flip(-1, old.left) and old.criteria == {"accuracy": 4}
    assert (new.supersedes_id, new.pair_id, new.left, new.reasoning) == (old.id, old.pair_id, old.left, REVISED)
    assert new.preference == flip(1, old.left) and new.criteria == {"accuracy": 2}
