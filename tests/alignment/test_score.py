"""`launch.py score`: a reward-model run scores every pair of a campaign into PairScore rows."""

import json
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import Session, select

import launch
from alignment.runner import train
from alignment.score import score_campaign
from storage.campaigns import campaign_id_for
from storage.db import make_engine, upgrade_database
from storage.models import Pair, PairScore
from storage.scores import latest_scoring_run, scores_for
from tests.alignment.conftest import seed_campaign

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_encoder, tiny_causal_lm):
    """A tiny reward model trained on a campaign whose chosen response is always A, and a tiny SFT run."""
    folder = tmp_path_factory.mktemp("score")
    engine = make_engine(f"sqlite:///{folder / 'concord.db'}")
    upgrade_database(engine)
    campaign = seed_campaign(engine, folder)
    common = ["--campaign", campaign, "--output_root", str(folder / "runs")]
    reward = train(RECIPES / "reward.yaml", ["--model_name_or_path", tiny_encoder, "--run_name", "rm", "--max_steps",
                                             "30", "--test_fraction", "0.0", *common], engine=engine)  # fmt: skip
    sft = train(RECIPES / "sft.yaml", ["--model_name_or_path", tiny_causal_lm, "--run_name", "sft", *common],
                engine=engine)  # fmt: skip
    yield engine, campaign, reward, sft
    engine.dispose()


def test_every_pair_is_scored_and_the_learned_preference_shows_in_the_margins(scored, capsys):
    engine, campaign, reward, _ = scored
    launch.main(["--database-url", str(engine.url), "score", "--campaign", campaign, "--run", "rm"])
    printed = json.loads(capsys.readouterr().out)
    with Session(engine) as session:
        campaign_id = campaign_id_for(session=session, name=campaign)
        frame = scores_for(session=session, campaign_id=campaign_id, run_id=reward.id)
        assert latest_scoring_run(session=session, campaign_id=campaign_id).name == "rm"
        labels = {pair.id: pair.prior_preference for pair in session.exec(select(Pair)).all()}
    assert printed["pairs"] == len(frame) == 20
    a_preferred = np.array([labels[pair_id] < 0 for pair_id in frame["pair_id"]])  # -2..2: negative is A better
    assert 0 < a_preferred.sum() < 20  # import put the chosen text on either side
    assert ((frame["margin"] > 0) == a_preferred).mean() >= 0.9  # the model learned which text is chosen
    assert printed["mean_abs_margin"] == pytest.approx(frame["margin"].abs().mean())
    assert (frame["margin_std"] == 0).all()  # no MC dropout asked for


def test_scoring_again_replaces_the_runs_scores_and_mc_dropout_spreads_the_margin(scored):
    engine, campaign, reward, _ = scored
    first = score_campaign(engine=engine, campaign=campaign, run="rm")
    again = score_campaign(engine=engine, campaign=campaign, run="rm", mc_dropout=8)
    with Session(engine) as session:
        rows = session.exec(select(PairScore).where(PairScore.run_id == reward.id)).all()
    assert len(rows) == 20 and again["mean_abs_margin"] == pytest.approx(first["mean_abs_margin"], rel=1e-5)
    spread = np.array([row.margin_std for row in rows])
    assert (spread > 0).all()  # the tiny BERT's dropout (0.1) is on for the samples


def test_only_a_finished_reward_run_of_this_database_scores(scored, capsys):
    engine, campaign, _, _ = scored
    with pytest.raises(ValueError, match="sft run: only a reward model"):
        score_campaign(engine=engine, campaign=campaign, run="sft")
    with pytest.raises(SystemExit, match="score failed: no training run is called 'nope'"):
        launch.main(["--database-url", str(engine.url), "score", "--campaign", campaign, "--run", "nope"])
    with pytest.raises(ValueError, match="no campaign named 'other'"):
        score_campaign(engine=engine, campaign="other", run="rm")
