"""`launch.py eval RUN` recomputes a run's held-out metrics; `--pairs FILE` scores any preference file."""

import json
import logging
import math
from pathlib import Path

import pytest

import launch
from alignment.evaluate import evaluate_run, find_run_folder, score_pairs
from alignment.runner import train
from storage.db import make_engine, upgrade_database, write_session
from storage.models import ExportRecord, TrainingRun
from tests.alignment.conftest import TOPICS, seed_campaign

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"
HEADLINE = {"sft": ["heldout_loss"], "reward": ["heldout_pairwise_accuracy", "heldout_mean_margin"],
            "dpo": ["heldout_reward_accuracy", "heldout_reward_margin"],
            "kto": ["heldout_loss", "heldout_reward_margin"]}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_causal_lm, tiny_encoder):
    """One finished tiny run per method, from one campaign, in one database."""
    folder = tmp_path_factory.mktemp("eval")
    engine = make_engine(f"sqlite:///{folder / 'concord.db'}")
    upgrade_database(engine)
    campaign = seed_campaign(engine, folder)
    runs = {}
    for method in HEADLINE:
        base = tiny_encoder if method == "reward" else tiny_causal_lm
        overrides = ["--model_name_or_path", base, "--campaign", campaign, "--output_root", str(folder / "runs"),
                     "--run_name", f"tiny-{method}"]  # fmt: skip
        runs[method] = train(RECIPES / f"{method}.yaml", overrides, engine=engine)
    yield engine, runs
    engine.dispose()


@pytest.mark.parametrize("method", list(HEADLINE))
def test_eval_recomputes_the_metrics_written_at_the_end_of_training(trained, method, capsys):
    engine, runs = trained
    run = runs[method]
    launch.main(["--database-url", str(engine.url), "eval", run.name])
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((Path(run.output_path) / "eval" / "heldout.json").read_text())
    for name in HEADLINE[method]:
        assert math.isfinite(printed[name]) and printed[name] == written[name]
        assert printed[name] == pytest.approx(run.metrics[name], rel=1e-4, abs=1e-6), name
    exported = json.loads((Path(run.output_path) / "data" / "export.json").read_text())["counts"]
    assert printed["rows"] == exported["test"] and printed["method"] == method


def _pairs_file(path: Path, swap: bool) -> Path:
    """Pairs in the plainest TRL format (strings); ``swap`` exchanges chosen and rejected."""
    rows = [{"prompt": f"Tell me about {t}.", "chosen": f"{t.capitalize()} are interesting and useful.",
             "rejected": f"I do not know about {t}."} for t in TOPICS[:12]]  # fmt: skip
    if swap:
        rows = [row | {"chosen": row["rejected"], "rejected": row["chosen"]} for row in rows]
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("method", ["reward", "dpo"])
def test_pairs_are_scored_and_swapping_them_mirrors_the_scores(trained, method, tmp_path):
    _, runs = trained
    run_dir = Path(runs[method].output_path)
    right = score_pairs(run_dir, _pairs_file(tmp_path / "right.jsonl", swap=False))
    wrong = score_pairs(run_dir, _pairs_file(tmp_path / "wrong.jsonl", swap=True))
    assert right["pairs"] == wrong["pairs"] == 12 and right["skipped_without_preference"] == 0
    assert 0 <= right["pairwise_accuracy"] <= 1 and right["mean_margin"] != 0
    assert wrong["pairwise_accuracy"] == pytest.approx(1 - right["pairwise_accuracy"])
    assert wrong["mean_margin"] == pytest.approx(-right["mean_margin"], rel=1e-4)
    assert json.loads((run_dir / "eval" / "pairs-right.jsonl.json").read_text())["pairs"] == 12
    if method == "reward":  # per pair: the interval, and what a length-only model would give away
        figures = right["pairwise"]
        assert figures["pairs"] == 12 and figures["ci95"][0] <= right["pairwise_accuracy"] <= figures["ci95"][1]
        assert figures["longer_response_chosen_by_labels"] == 1.0  # "X are interesting..." is the longer text
        assert figures["accuracy_when_chosen_is_longer"]["pairs"] == 12
        assert wrong["pairwise"]["accuracy_when_chosen_is_shorter"]["pairs"] == 12


def test_pairs_without_a_preference_are_skipped_and_counted(trained, tmp_path):
    _, runs = trained
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"prompt": "Tell me about owls.", "response_a": "Owls are birds.", "response_b": "No.", "preference": -2},
        {"prompt": "Tell me about salt.", "response_a": "Salt.", "response_b": "Sand.", "preference": 0},
        {"prompt": "Tell me about moss.", "response_a": "Moss.", "response_b": "Grass."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    result = score_pairs(Path(runs["reward"].output_path), path)
    assert (result["pairs"], result["skipped_without_preference"]) == (1, 2)
    path.write_text(json.dumps(rows[1]), encoding="utf-8")
    with pytest.raises(ValueError, match="none of its 1 pairs says which response is preferred"):
        score_pairs(Path(runs["reward"].output_path), path)


def test_only_a_reward_model_or_a_dpo_policy_scores_pairs(trained, tmp_path, capsys):
    engine, runs = trained
    pairs = _pairs_file(tmp_path / "p.jsonl", swap=False)
    with pytest.raises(SystemExit, match="eval failed: tiny-sft is a sft run: only a reward model or a DPO policy"):
        launch.main(["--database-url", str(engine.url), "eval", "tiny-sft", "--pairs", str(pairs)])
    with pytest.raises(SystemExit, match="eval failed: no training run is called 'nobody'"):
        launch.main(["--database-url", str(engine.url), "eval", "nobody"])


def test_eval_warns_when_the_run_or_its_export_is_stale(trained, caplog):
    engine, runs = trained
    run = runs["reward"]
    with write_session(engine) as session, session.begin():
        session.get(ExportRecord, run.export_ids[0]).stale = True
        session.get(TrainingRun, run.id).stale = True
    try:
        with caplog.at_level(logging.WARNING, logger="alignment.source"):
            assert find_run_folder(run.name, engine=engine) == Path(run.output_path)
        assert f"training run {run.name!r} is stale" in caplog.text
        assert f"export #{run.export_ids[0]}" in caplog.text and "erased since" in caplog.text
    finally:
        with write_session(engine) as session, session.begin():
            session.get(ExportRecord, run.export_ids[0]).stale = False
            session.get(TrainingRun, run.id).stale = False


def test_a_run_folder_evaluates_without_the_database(trained):
    _, runs = trained
    run_dir = Path(runs["sft"].output_path)
    assert find_run_folder(str(run_dir), engine=None) == run_dir
    assert evaluate_run(run_dir)["heldout_loss"] == pytest.approx(runs["sft"].metrics["heldout_loss"], rel=1e-4)
