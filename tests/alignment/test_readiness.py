"""The run stops before any model loads when its rows are unusable or its raters disagree."""

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import launch
from alignment.readiness import NotReady
from alignment.runner import train
from storage.db import write_session
from storage.imports import import_file
from storage.models import Judgment, Pair, TrainingRun, User
from tests.alignment.conftest import seed_campaign

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "dpo.yaml"


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for auto in (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer):
        monkeypatch.setattr(auto, "from_pretrained", refuse)


def _overrides(tmp_path, campaign: str, *extra: str) -> list[str]:
    return ["--model_name_or_path", "unused", "--campaign", campaign, "--output_root", str(tmp_path / "runs"), *extra]


def _unlabelled_campaign(engine, tmp_path) -> str:
    seed_campaign(engine, tmp_path, name="seed")  # only to write the JSONL
    import_file(tmp_path / "seed.jsonl", engine=engine, campaign="unlabelled", fmt="trl", known_as="none")
    return "unlabelled"


def test_a_campaign_without_usable_pairs_fails_before_any_model_loads(engine, tmp_path, no_model_loads):
    campaign = _unlabelled_campaign(engine, tmp_path)
    with pytest.raises(ValueError, match="campaign 'unlabelled' has no preference rows to export"):
        train(RECIPE, _overrides(tmp_path, campaign, "--run_name", "empty"), engine=engine)
    with Session(engine) as session:
        run = session.exec(select(TrainingRun).where(TrainingRun.name == "empty")).one()
    assert run.status == "failed" and "no preference rows" in run.metrics["error"]


def test_the_command_line_reports_the_failure(sqlite_engine, tmp_path, no_model_loads):
    campaign = _unlabelled_campaign(sqlite_engine, tmp_path)
    with pytest.raises(SystemExit, match="train failed: campaign 'unlabelled' has no preference rows"):
        launch.main(["--database-url", str(sqlite_engine.url), "train", str(RECIPE), *_overrides(tmp_path, campaign)])


def _disagreeing_judgments(engine, campaign: str) -> None:
    """Three raters per pair: two always opposite, the third alternating, so every pair splits 2 to 1."""
    with write_session(engine) as session, session.begin():
        raters = [User(username=f"r{i}", password_hash="-") for i in range(3)]
        session.add_all(raters)
        session.flush()
        for n, pair in enumerate(session.exec(select(Pair)).all()):
            for rater, preference in zip(raters, (-2, 2, -1 if n % 2 else 1), strict=True):
                session.add(Judgment(pair_id=pair.id, preference=preference, left="a", rater_id=rater.id,
                                     guideline_version=1))  # fmt: skip


def test_low_agreement_stops_the_run_unless_allowed(sqlite_engine, tmp_path, no_model_loads):
    campaign = _unlabelled_campaign(sqlite_engine, tmp_path)
    _disagreeing_judgments(sqlite_engine, campaign)
    with pytest.raises(NotReady, match="min_agreement_alpha 0.6"):
        train(RECIPE, _overrides(tmp_path, campaign, "--run_name", "strict"), engine=sqlite_engine)
    readiness = json.loads((tmp_path / "runs" / "strict" / "readiness.json").read_text())
    alpha = next(c for c in readiness["checks"] if c["check"].startswith("agreement"))
    assert not readiness["ready"] and alpha["status"] == "stop"
    # Allowed, the gate passes and the run goes on to load the model, which this test refuses.
    with pytest.raises(AssertionError, match="a model was loaded"):
        train(RECIPE, _overrides(tmp_path, campaign, "--run_name", "lenient", "--allow_low_agreement", "true"),
              engine=sqlite_engine)  # fmt: skip
    readiness = json.loads((tmp_path / "runs" / "lenient" / "readiness.json").read_text())
    assert readiness["ready"] and any(c["status"] == "warn" and c["check"].startswith("agreement")
                                      for c in readiness["checks"])  # fmt: skip


def test_prior_labels_go_on_saying_agreement_cannot_be_measured(sqlite_engine, tmp_path, no_model_loads):
    campaign = seed_campaign(sqlite_engine, tmp_path)
    with pytest.raises(AssertionError, match="a model was loaded"):
        train(RECIPE, _overrides(tmp_path, campaign, "--run_name", "prior"), engine=sqlite_engine)
    checks = {
        c["check"]: c for c in json.loads((tmp_path / "runs" / "prior" / "readiness.json").read_text())["checks"]
    }
    assert checks["agreement (alpha, nominal)"]["status"] == "unknown"
    assert checks["rows per split"]["detail"]["train"] > 0
    assert checks["test rows whose prompt is also in train"]["detail"] == 0
    assert checks["licenses"]["detail"]["license"] == "mit"
