"""A reward run trained on a campaign whose queue follows a reward model rescores the campaign when it finishes, so
the queue follows the newest model; with the fifo order nothing is scored."""

import logging
from pathlib import Path

from sqlmodel import Session, select

from alignment.runner import train
from storage.campaigns import campaign_id_for
from storage.db import make_engine, upgrade_database, write_session
from storage.models import Campaign, PairScore, QueueOrder
from storage.scores import latest_scoring_run, scores_for
from tests.alignment.conftest import seed_campaign

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


def _train(engine, folder, campaign, encoder, name):
    overrides = ["--model_name_or_path", encoder, "--run_name", name, "--max_steps", "5", "--test_fraction", "0.0",
                 "--campaign", campaign, "--output_root", str(folder / "runs")]  # fmt: skip
    return train(RECIPES / "reward.yaml", overrides, engine=engine)


def test_a_finished_reward_run_rescores_its_campaign_only_when_the_queue_follows_the_model(
    tmp_path, tiny_encoder, caplog
):
    engine = make_engine(f"sqlite:///{tmp_path / 'concord.db'}")
    upgrade_database(engine)
    campaign = seed_campaign(engine, tmp_path)
    _train(engine, tmp_path, campaign, tiny_encoder, "rm-fifo")
    with Session(engine) as session:
        assert session.exec(select(PairScore)).all() == []  # fifo: the queue reads no scores, none are written
    with write_session(engine) as session, session.begin():
        session.exec(select(Campaign).where(Campaign.name == campaign)).one().queue_order = QueueOrder.uncertainty
    with caplog.at_level(logging.INFO, logger="alignment.score"):
        first = _train(engine, tmp_path, campaign, tiny_encoder, "rm-1")
        second = _train(engine, tmp_path, campaign, tiny_encoder, "rm-2")
    with Session(engine) as session:
        campaign_id = campaign_id_for(session=session, name=campaign)
        assert latest_scoring_run(session=session, campaign_id=campaign_id).id == second.id  # the newest model
        for run in (first, second):
            assert len(scores_for(session=session, campaign_id=campaign_id, run_id=run.id)) == 20
    assert "the uncertainty queue of 'tiny' now follows run 'rm-2': 20 pairs scored" in caplog.text
    engine.dispose()
