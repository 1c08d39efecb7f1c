"""The reward model's scores in the Lead tab: the queue order setting with the run it follows, and the review queue
of likely label errors. Only the campaign's leads and admins see either; a rater is refused, in the service and
over HTTP."""

from datetime import UTC, datetime

import gradio as gr
import pytest
from gradio_client import Client
from sqlmodel import Session, select

from storage.accounts import create_user
from storage.db import make_engine, upgrade_database, write_session
from storage.models import (
    Adjudication,
    Campaign,
    CampaignMember,
    CampaignUpdate,
    Judgment,
    Pair,
    PairScore,
    Prompt,
    QueueOrder,
    Response,
    Role,
    TrainingRun,
    UserCreate,
)
from studio.access import PermissionDenied
from studio.leads import LeadService
from studio.server import launch_kwargs
from studio.tabs.adjudication import label_errors_view
from studio.tabs.campaigns import queue_note
from studio.tabs.lead import build_lead_tabs

PASSWORD = "password1"
WRITTEN = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
# Per pair: the raters' preferences (negative: A better) and the reward model's margin (score A - score B).
PAIRS = [((-2, -1), -4.0), ((2,), 1.0), ((1, 1), -2.0), ((-1,), 3.0), ((), 0.5)]


def _world(engine) -> dict:
    """Campaign c (lead lena, rater ada, pairs as PAIRS, pair 3 adjudicated), campaign d (lead olga), admin root."""
    with write_session(engine) as s, s.begin():
        roles = {"root": Role.admin, "lena": Role.lead, "olga": Role.lead, "ada": Role.rater, "bo": Role.rater}
        ids = {n: create_user(session=s, user=UserCreate(username=n, password=PASSWORD, role=r)).id
               for n, r in roles.items()}  # fmt: skip
        c, d = Campaign(name="c"), Campaign(name="d")
        run = TrainingRun(name="rm-7", method="reward", status="finished")
        s.add_all([c, d, run])
        s.flush()
        s.add_all([CampaignMember(campaign_id=c.id, user_id=ids["lena"], role=Role.lead),
                   CampaignMember(campaign_id=d.id, user_id=ids["olga"], role=Role.lead)])  # fmt: skip
        pairs = []
        for n, (votes, margin) in enumerate(PAIRS):
            prompt = Prompt(campaign_id=c.id, messages=[{"role": "user", "content": f"question {n}"}],
                            content_hash=f"q{n}")  # fmt: skip
            s.add(prompt)
            s.flush()
            a, b = Response(prompt_id=prompt.id, text=f"A{n}"), Response(prompt_id=prompt.id, text=f"B{n}")
            s.add_all([a, b])
            s.flush()
            pair = Pair(campaign_id=c.id, prompt_id=prompt.id, response_a_id=a.id, response_b_id=b.id,
                        content_hash=f"q{n}")  # fmt: skip
            s.add(pair)
            s.flush()
            s.add_all(Judgment(pair_id=pair.id, rater_id=ids[who], preference=v, left="a", guideline_version=1)
                      for who, v in zip(("ada", "bo"), votes, strict=False))  # fmt: skip
            s.add(PairScore(pair_id=pair.id, run_id=run.id, score_a=margin, score_b=0.0, scored_at=WRITTEN))
            pairs.append(pair.id)
        s.add(Adjudication(pair_id=pairs[3], preference=1, note="the model was right", decided_by=ids["lena"]))
        return {"ids": ids, "c": c.id, "d": d.id, "pairs": pairs}


@pytest.fixture
def world(engine):
    return _world(engine) | {"leads": LeadService(engine)}


def test_only_the_campaigns_leads_and_admins_see_the_scores_and_the_review_queue(world):
    leads, ids, c = world["leads"], world["ids"], world["c"]
    for who in ("ada", "olga"):  # a rater of the campaign, the lead of another
        with pytest.raises(PermissionDenied, match="Only the campaign's leads and admins"):
            leads.label_errors(ids[who], c)
        with pytest.raises(PermissionDenied, match="Only the campaign's leads and admins"):
            leads.queue_scores(ids[who], c)
    for who in ("lena", "root"):
        found = leads.label_errors(ids[who], c)
        assert found.scoring.run == "rm-7" and found.scoring.scored_at == WRITTEN
        # pair 0 (raters A, model B by 4) first, then pair 1; pair 3 is decided, pair 2 agrees, pair 4 is unjudged
        assert [p.pair_id for p in found.pairs] == [world["pairs"][0], world["pairs"][1]]
    table, note = label_errors_view(leads.label_errors(ids["lena"], c))
    assert table.iloc[0].tolist()[2:6] == [2, -1.5, -4.0, 0.018] and "run **rm-7**" in note and "2 judged" in note


def test_the_queue_note_names_the_run_or_says_the_queue_is_fifo(world):
    leads, lena, c, d, root = world["leads"], world["ids"]["lena"], world["c"], world["d"], world["ids"]["root"]
    assert "are not used" in queue_note(leads.queue_scores(lena, c), "c")
    leads.update_campaign(lena, c, CampaignUpdate(queue_order=QueueOrder.disagreement))
    note = queue_note(leads.queue_scores(lena, c), "c")
    assert note.startswith("The **disagreement** order follows the scores of run **rm-7**, written 2026-03-01 12:30")
    assert "5 of its 5 pairs" in note
    leads.update_campaign(root, d, CampaignUpdate(queue_order=QueueOrder.uncertainty))
    fallback = queue_note(leads.queue_scores(root, d), "d")
    assert "queue hands out pairs in fifo order" in fallback and "launch.py score --campaign d" in fallback
    assert leads.label_errors(root, d).pairs == []


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("label-errors")
    engine = make_engine(f"sqlite:///{root / 'concord.db'}")
    upgrade_database(engine)
    world = _world(engine)
    leads = LeadService(engine)
    with gr.Blocks() as app, gr.Tabs():
        build_lead_tabs(leads, root / "exports")
    app.queue()
    _, url, _ = app.launch(prevent_thread_lock=True, quiet=True, show_error=True, **launch_kwargs(leads))
    yield world | {"url": url, "engine": engine}
    app.close()
    engine.dispose()


def test_over_http_a_lead_lists_label_errors_and_sets_the_order_and_a_rater_is_refused(studio):
    lena = Client(studio["url"], auth=("lena", PASSWORD), verbose=False)
    table, note = lena.predict(studio["c"], api_name="/lead_label_errors")
    assert [row[0] for row in table["data"]] == studio["pairs"][:2] and "rm-7" in note
    *_, order, shown, status = lena.predict(studio["c"], "", "helpfulness", 3, 0.1, "training", 0, "", "", 0.7, 20,
                                            True, "preference", False, "uncertainty",
                                            api_name="/lead_update_campaign")  # fmt: skip
    assert (order, status) == ("uncertainty", "Saved.") and "**uncertainty** order follows" in shown
    with Session(studio["engine"]) as session:
        assert session.get(Campaign, studio["c"]).queue_order == QueueOrder.uncertainty
        assert session.exec(select(Campaign.queue_order).where(Campaign.id == studio["d"])).one() == "fifo"
    ada = Client(studio["url"], auth=("ada", PASSWORD), verbose=False)
    with pytest.raises(Exception, match="Only the campaign's leads and admins"):
        ada.predict(studio["c"], api_name="/lead_label_errors")
