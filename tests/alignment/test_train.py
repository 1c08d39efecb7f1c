"""End to end: a seeded campaign trains each tiny recipe, and the run links back to its export."""

import json
import math
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from sqlmodel import Session
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from alignment.arguments import EXPORT_KINDS
from alignment.runner import train
from storage.models import ExportRecord, TrainingRun
from tests.alignment.conftest import seed_campaign

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"
HEADLINE = {"sft": "heldout_loss", "reward": "heldout_pairwise_accuracy", "dpo": "heldout_reward_accuracy",
            "kto": "heldout_loss"}  # fmt: skip


def _load(method: str, folder: str):
    if method == "reward":
        return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    return AutoModelForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("method", ["sft", "reward", "dpo", "kto"])
def test_tiny_recipe_trains_from_a_campaign(method, sqlite_engine, tmp_path, tiny_causal_lm, tiny_encoder):
    campaign = seed_campaign(sqlite_engine, tmp_path)
    base = tiny_encoder if method == "reward" else tiny_causal_lm
    before = dict(_load(method, base).named_parameters())
    overrides = ["--model_name_or_path", base, "--campaign", campaign, "--output_root", str(tmp_path / "runs")]

    run = train(RECIPES / f"{method}.yaml", overrides, engine=sqlite_engine)

    model_dir = Path(run.output_path) / "model"
    assert run.status == "finished" and run.finished_at is not None
    assert math.isfinite(run.metrics["train_loss"]) and math.isfinite(run.metrics[HEADLINE[method]])
    assert json.loads((model_dir / "metrics.json").read_text())["train_loss"] == run.metrics["train_loss"]
    trained = _load(method, str(model_dir))
    changed = [n for n, p in trained.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed, "no trainable parameter changed"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if method == "sft":  # assistant-only loss: the saved template marks the assistant turns
        assert "{% generation %}" in tokenizer.chat_template
    with torch.no_grad():
        out = trained(**tokenizer(["Tell me about owls."], return_tensors="pt"))
    assert torch.isfinite(out.logits).all()
    with Session(sqlite_engine) as session:
        export = session.get(ExportRecord, run.export_ids[0])
        assert export.kind == EXPORT_KINDS[method]
        assert Path(export.out_path) == (Path(run.output_path) / "data").resolve()
        assert session.get(TrainingRun, run.id).recipe["model"]["model_name_or_path"] == base
    if method == "dpo":  # the tiny DPO recipe computes the reference's log-probs once, before the first step
        assert run.recipe["training"]["precompute_ref_log_probs"] is True
    readiness = json.loads((Path(run.output_path) / "readiness.json").read_text())
    assert readiness["ready"] and readiness["export_ids"] == run.export_ids


def test_a_reward_run_repeats_exactly_with_its_seed(sqlite_engine, tmp_path, tiny_encoder):
    """The score head is initialised before TRL's Trainer seeds anything: the runner seeds first."""
    campaign = seed_campaign(sqlite_engine, tmp_path)
    runs = [
        train(
            RECIPES / "reward.yaml",
            [
                "--model_name_or_path",
                tiny_encoder,
                "--campaign",
                campaign,
                "--output_root",
                str(tmp_path / "runs"),
                "--run_name",
                f"again-{i}",
            ],
            engine=sqlite_engine,
        )  # fmt: skip
        for i in range(2)
    ]
    heads = [
        AutoModelForSequenceClassification.from_pretrained(Path(r.output_path) / "model").state_dict() for r in runs
    ]
    assert runs[0].metrics["train_loss"] == runs[1].metrics["train_loss"]
    assert all(torch.equal(heads[0][name], heads[1][name]) for name in heads[0])


def test_the_tiny_reward_recipe_learns_a_separable_toy_set(sqlite_engine, tmp_path, tiny_encoder):
    """Imported prior labels bring no margin, so the loss starts at ln 2 and must fall well below it as the model
    learns that "X are interesting and useful." beats "I do not know about X."."""
    campaign = seed_campaign(sqlite_engine, tmp_path)
    overrides = ["--model_name_or_path", tiny_encoder, "--campaign", campaign, "--output_root", str(tmp_path / "runs"),
                 "--max_steps", "40", "--test_fraction", "0.3"]  # fmt: skip
    run = train(RECIPES / "reward.yaml", overrides, engine=sqlite_engine)
    exported = load_from_disk(str(Path(run.output_path) / "data" / "dataset"))
    assert set(exported["train"]["margin"]) == {0.0}
    assert run.metrics["train_loss"] < 0.85 * math.log(2) and run.metrics["eval"]["eval_loss"] < 0.5 * math.log(2)
    heldout = run.metrics["heldout_pairwise"]
    assert heldout["pairs"] >= 3 and heldout["accuracy"] == 1.0 and heldout["mean_margin"] > 0


def test_a_recipe_that_evaluates_during_training_runs_without_heldout_rows(sqlite_engine, tmp_path, tiny_encoder):
    """A real reward recipe evaluates every N steps; with test_fraction 0 there is nothing to evaluate on, and the
    run says so and trains instead of failing with transformers' own message."""
    campaign = seed_campaign(sqlite_engine, tmp_path)
    overrides = ["--model_name_or_path", tiny_encoder, "--campaign", campaign, "--output_root", str(tmp_path / "runs"),
                 "--test_fraction", "0", "--eval_strategy", "steps", "--eval_steps", "1"]  # fmt: skip
    run = train(RECIPES / "reward.yaml", overrides, engine=sqlite_engine)
    assert run.status == "finished" and run.metrics["eval"].startswith("no test rows")
    assert run.recipe["training"]["eval_strategy"] == "steps"  # the recipe as asked; the run turned it off
