"""A lead trains from the studio in a real headless Chromium at 1280x800 (conftest.py): a tiny reward run of
recipes/tiny/reward.yaml on a seeded campaign, started from the Runs tab with the keyboard, runs as `launch.py train`
and finishes with its metrics, curves and readiness checklist shown; a second, long run survives a reload of the
page and is stopped from it, and shows as stopped."""

import re

import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from storage import members
from storage.db import write_session
from storage.models import Campaign, Role, TrainingRun, User
from tests.alignment.conftest import seed_campaign, tiny_llama
from tests.browser.conftest import log_in, screenshot
from tests.browser.test_studio import choose

pytestmark = [pytest.mark.browser, pytest.mark.slow]
FINISHED_WITHIN_MS = 180_000  # the subprocess loads torch and the trainer on a busy 2-core machine


@pytest.fixture(scope="module")
def tiny(studio, tmp_path_factory) -> str:
    """Campaign "tiny" (20 labelled pairs) led by lena, and a tiny Llama saved where the run can load it."""
    folder = tmp_path_factory.mktemp("tiny-run")
    seed_campaign(studio["engine"], folder)
    with write_session(studio["engine"]) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == "tiny")).one()
        lena = session.exec(select(User).where(User.username == "lena")).one()
        members.set_member(session=session, campaign=campaign, user=lena, role=Role.lead, actor_id=None)
    return str(tiny_llama(folder / "model"))


def open_runs(page) -> None:
    page.get_by_role("tab", name="Lead").click()
    choose(page, "lead-campaign", "tiny")
    page.get_by_role("tab", name="Runs").click()
    expect(page.locator("#lead-runs-tab")).to_contain_text("Pick a recipe")


def status(studio, name: str) -> str:
    with Session(studio["engine"]) as session:
        return session.exec(select(TrainingRun.status).where(TrainingRun.name == name)).one()


def test_a_lead_trains_a_tiny_reward_model_and_stops_another_run(studio, browser, tiny):
    page = log_in(browser, studio["url"], "lena")
    open_runs(page)
    expect(page.locator("#runs-stop")).to_be_disabled()  # no run picked
    choose(page, "runs-recipe", "recipes/tiny/reward.yaml")
    page.locator("#runs-model input, #runs-model textarea").first.fill(tiny)
    page.locator("#runs-name input, #runs-name textarea").first.fill("rm-ui")
    page.locator("#runs-overrides input, #runs-overrides textarea").first.fill("--max_steps 8")
    page.locator("#runs-start").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#runs-refused")).to_contain_text("Started rm-ui")
    state = page.locator("#runs-state")
    expect(state).to_contain_text("Finished", timeout=FINISHED_WITHIN_MS)
    expect(state).to_contain_text("step 8 / 8")
    expect(page.locator("#runs-metrics")).to_contain_text("heldout_pairwise_accuracy")
    expect(page.locator("#runs-readiness")).to_contain_text("rows per split")
    expect(page.locator("#runs-curve img, #runs-curve svg, #runs-curve canvas").first).to_be_visible()
    expect(page.locator("#runs-table")).to_contain_text("finished")
    expect(page.locator("#runs-stop")).to_be_disabled()  # nothing to stop
    expect(page.locator("#runs-log textarea")).to_have_value(re.compile("training run 'rm-ui' finished"))
    page.locator("#runs-run").scroll_into_view_if_needed()
    screenshot(page, "lead-runs-finished")  # docs/images/lead-runs.png
    assert status(studio, "rm-ui") == "finished"

    page.get_by_text("Start a run").click()  # the form folded away when the run started
    page.locator("#runs-name input, #runs-name textarea").first.fill("rm-long")
    page.locator("#runs-overrides input, #runs-overrides textarea").first.fill("--max_steps 100000 --logging_steps 25")
    page.locator("#runs-start").click()
    expect(state).to_contain_text("Running", timeout=FINISHED_WITHIN_MS)
    page.reload()  # the run lives in the database, its folder and its log, not in this page
    page.locator("#concord-campaign").wait_for()
    open_runs(page)
    expect(page.locator("#runs-run input")).to_have_value("rm-long")
    expect(state).to_contain_text("Running")
    expect(state).to_contain_text("left")  # its ETA, from the log history
    expect(page.locator("#runs-stop")).to_be_enabled()
    page.locator("#runs-stop").click()
    expect(page.locator("#runs-refused")).to_contain_text("Stopped rm-long", timeout=30_000)
    expect(state).to_contain_text("Stopped")
    expect(page.locator("#runs-table")).to_contain_text("stopped")
    expect(page.locator("#runs-stop")).to_be_disabled()
    screenshot(page, "lead-runs-stopped")
    assert status(studio, "rm-long") == "stopped"
    choose(page, "lead-campaign", "demo")  # no run yet: tiny's run is no longer shown under demo's name
    expect(state).not_to_contain_text("Stopped")
    expect(page.locator("#runs-log textarea")).to_have_value("")
    expect(page.locator("#runs-table")).not_to_contain_text("rm-long")
