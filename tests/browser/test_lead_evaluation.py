"""A lead reads an evaluation campaign's results in a real headless Chromium at 1280x800 (conftest.py): the models
by rank with their ratings, the win-rate matrix and the plot, a reward model's verdict as a judge beside the raters';
and a Generate form left empty is refused beside it."""

import json

import pytest
from playwright.sync_api import expect
from sqlmodel import Session, select

from storage import members
from storage.db import write_session
from storage.imports import import_file
from storage.models import Campaign, Pair, PairScore, Response, Role, TrainingRun, User
from storage.pairing import form_pairs
from tests.browser.conftest import log_in, screenshot
from tests.studio.test_evaluation import CATEGORIES, QUALITY, answer, judge_everything

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def arena(studio, tmp_path_factory):
    """An evaluation campaign of three models' answers, judged by three raters; lena leads it."""
    engine, folder = studio["engine"], tmp_path_factory.mktemp("arena")
    for model, quality in QUALITY.items():
        rows = [{"prompt": f"Question {i}?", "response": answer(i, quality), "domain": CATEGORIES[i % 2]}
                for i in range(8)]  # fmt: skip
        (folder / f"{model}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        import_file(folder / f"{model}.jsonl", engine=engine, campaign="arena", model=model)
    with write_session(engine) as session, session.begin():
        campaign = session.exec(select(Campaign).where(Campaign.name == "arena")).one()
        form_pairs(session=session, campaign_id=campaign.id, strategy="all-models", evaluation=True)
        raters = [User(username=f"judge{k}", password_hash="x", role=Role.rater, domains=list(CATEGORIES))
                  for k in range(3)]  # fmt: skip
        session.add_all(raters)
        session.flush()
        campaign.overlap_k = 3
        lena = session.exec(select(User).where(User.username == "lena")).one()
        members.set_member(session=session, campaign=campaign, user=lena, role=Role.lead, actor_id=None)
        ids = campaign.id, [u.id for u in raters]
    judge_everything(engine, *ids)
    with write_session(engine) as session, session.begin():  # a reward model that ranks gamma above beta
        run = TrainingRun(name="arena-rm", method="reward", status="finished")
        session.add(run)
        session.flush()
        taste = {"alpha-7b": 3.0, "beta-13b": 1.0, "gamma-1b": 2.0}
        for pair in session.exec(select(Pair).where(Pair.campaign_id == ids[0])):
            a, b = (session.get(Response, r).author for r in (pair.response_a_id, pair.response_b_id))
            session.add(PairScore(pair_id=pair.id, run_id=run.id, score_a=taste[a], score_b=taste[b]))
    return ids[0]


def test_a_lead_reads_the_evaluation_and_an_empty_generate_form_is_refused(studio, browser, arena):
    page = log_in(browser, studio["url"], "lena")
    page.get_by_role("tab", name="Lead").click()
    page.locator("#lead-campaign input").click()
    page.get_by_role("option", name="arena", exact=True).click()
    page.get_by_role("tab", name="Generate").click()
    expect(page.locator("#lead-generate-tab")).to_contain_text("Endpoint keys are never typed here")
    page.locator("#generate-start").click()
    expect(page.locator("#generate-refused")).to_contain_text("Not done: Give one model spec per line")

    page.get_by_role("tab", name="Evaluation").click()
    page.locator("#evaluation-refresh").click()
    ratings = page.locator("#evaluation-ratings")
    expect(ratings).to_contain_text("alpha-7b", timeout=60_000)
    expect(page.locator("#evaluation-summary")).to_contain_text("votes on")
    expect(page.locator("#evaluation-matrix")).to_contain_text("n=24")
    page.locator("#evaluation-plot").scroll_into_view_if_needed()
    expect(page.locator("#evaluation-plot img, #evaluation-plot svg, #evaluation-plot canvas").first).to_be_visible()
    judge = page.locator("#evaluation-judge")
    judge.scroll_into_view_if_needed()
    expect(judge).to_contain_text("Reward model arena-rm as judge on 24 pairs: agrees with the human majority on")
    expect(judge).to_contain_text("Rank correlation of its ratings with the humans': 0.50")
    expect(page.locator("#evaluation-judge-ratings")).to_contain_text("gamma-1b")
    screenshot(page, "lead-evaluation-judge")
    page.locator("#evaluation-summary").scroll_into_view_if_needed()
    screenshot(page, "lead-evaluation")
    with Session(studio["engine"]) as session:
        assert session.get(Campaign, arena).kind == "evaluation"
