"""Runs beyond one tiny recipe: resume after a crash, a policy from an earlier run, reward LoRA, long dialogues."""

import json
import logging
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from sqlmodel import Session, select
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import SFTTrainer

import launch
from alignment.arguments import ModelArguments
from alignment.evaluate import evaluate_run
from alignment.model import load_tokenizer
from alignment.reward import left_truncate, tokenize_pairs
from alignment.runner import train
from storage.db import write_session
from storage.export import export_campaign
from storage.imports import import_file
from storage.models import ExportRecord, TrainingRun
from tests.alignment.conftest import TOPICS, seed_campaign

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


def _args(tmp_path, campaign: str, base: str, name: str, *extra: str) -> list[str]:
    return ["--model_name_or_path", base, "--campaign", campaign, "--output_root", str(tmp_path / "runs"),
            "--run_name", name, *extra]  # fmt: skip


def _crash_after_checkpoint(monkeypatch, step: int) -> None:
    save = SFTTrainer._save_checkpoint

    def save_then_crash(self, model, trial):
        save(self, model, trial)
        if self.state.global_step == step:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(SFTTrainer, "_save_checkpoint", save_then_crash)


def test_resume_continues_a_crashed_run_from_its_last_checkpoint(sqlite_engine, tmp_path, tiny_causal_lm, monkeypatch):
    campaign = seed_campaign(sqlite_engine, tmp_path)
    args = _args(tmp_path, campaign, tiny_causal_lm, "sft-crash", "--save_strategy", "steps", "--save_steps", "2",
                 "--report_to", "tensorboard")  # fmt: skip
    _crash_after_checkpoint(monkeypatch, step=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(RECIPES / "sft.yaml", [*args, "--max_steps", "4"], engine=sqlite_engine)
    monkeypatch.undo()
    model_dir = tmp_path / "runs" / "sft-crash" / "model"
    assert sorted(p.name for p in model_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    # Mark the checkpoint's history: if the resumed run restores it rather than training from step 0, the mark stays.
    state_file = model_dir / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][0]["loss"] = 123.0
    state_file.write_text(json.dumps(state))
    with pytest.raises(FileExistsError, match="already exists"):
        train(RECIPES / "sft.yaml", [*args, "--max_steps", "6"], engine=sqlite_engine)

    launch.main(["--database-url", str(sqlite_engine.url), "train", str(RECIPES / "sft.yaml"), "--resume", *args,
                 "--max_steps", "6"])  # fmt: skip

    with Session(sqlite_engine) as session:
        run = session.exec(select(TrainingRun).where(TrainingRun.name == "sft-crash")).one()  # one row, reused
        assert session.exec(select(ExportRecord)).all() == [session.get(ExportRecord, run.export_ids[0])]
    assert run.status == "finished" and run.metrics["resumed_from"] == "checkpoint-2"
    assert run.metrics["train_steps"] == 6 and run.recipe["training"]["max_steps"] == 6
    history = json.loads((model_dir / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
    assert history[0]["loss"] == 123.0 and [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4, 5, 6]
    assert list(model_dir.glob("runs/*/events.out.tfevents.*")), "no TensorBoard log under the run folder"


def test_resume_needs_an_existing_run(sqlite_engine, tmp_path, tiny_causal_lm):
    campaign = seed_campaign(sqlite_engine, tmp_path)
    with pytest.raises(ValueError, match="no training run is called 'never-ran'"):
        train(RECIPES / "sft.yaml", _args(tmp_path, campaign, tiny_causal_lm, "never-ran"), engine=sqlite_engine,
              resume=True)  # fmt: skip


def test_dpo_starts_from_an_sft_run_by_name(sqlite_engine, tmp_path, tiny_causal_lm):
    campaign = seed_campaign(sqlite_engine, tmp_path)
    sft = train(RECIPES / "sft.yaml", _args(tmp_path, campaign, tiny_causal_lm, "sft-base"), engine=sqlite_engine)
    # Without precomputed log-probs TRL loads the reference itself: from the policy's start, the SFT model.
    dpo = train(RECIPES / "dpo.yaml", _args(tmp_path, campaign, "run:sft-base", "dpo-on-sft",
                                            "--precompute_ref_log_probs", "false"), engine=sqlite_engine)  # fmt: skip
    start = Path(sft.output_path) / "model"
    assert dpo.status == "finished" and dpo.recipe["model"]["model_name_or_path"] == "run:sft-base"
    assert dpo.recipe["model_path"] == str(start)
    before = dict(AutoModelForCausalLM.from_pretrained(start).named_parameters())
    after = AutoModelForCausalLM.from_pretrained(Path(dpo.output_path) / "model").named_parameters()
    assert any(not torch.equal(p, before[n]) for n, p in after)


def _scores(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(["Tell me about owls.", "Tell me about salt."], return_tensors="pt")).logits


def test_reward_lora_saves_and_reloads_its_trained_head(sqlite_engine, tmp_path, tiny_encoder):
    campaign = seed_campaign(sqlite_engine, tmp_path)
    args = _args(tmp_path, campaign, tiny_encoder, "reward-lora", "--use_peft", "true", "--lora_r", "4",
                 "--lora_alpha", "8", "--learning_rate", "5e-2")  # fmt: skip
    run = train(RECIPES / "reward.yaml", args, engine=sqlite_engine)
    folder = Path(run.output_path) / "model"
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and "classifier" in adapter["modules_to_save"]
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def base(seed: int):
        torch.manual_seed(seed)  # a head that was not saved would come out of this seed
        model = AutoModelForSequenceClassification.from_pretrained(tiny_encoder, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        return model.eval()

    untrained = _scores(base(0), tokenizer)
    first = _scores(PeftModel.from_pretrained(base(0), folder).eval(), tokenizer)
    second = _scores(PeftModel.from_pretrained(base(1), folder).eval(), tokenizer)
    assert torch.equal(first, second)  # the head came from the file, not from the seed
    assert not torch.allclose(first, untrained)
    recomputed = evaluate_run(Path(run.output_path))  # the adapter on its base, as launch.py eval loads it
    assert recomputed["heldout_mean_margin"] == pytest.approx(run.metrics["heldout_mean_margin"], rel=1e-4)


def _long_campaign(engine, tmp_path) -> str:
    """Half the pairs follow a long earlier dialogue; the final replies differ as in seed_campaign."""
    records = []
    for i, topic in enumerate(TOPICS):
        history = [{"role": role, "content": f"Tell me about {t}. {t.capitalize()} are interesting and useful."}
                   for t in TOPICS[:8] for role in ("user", "assistant")] if i % 2 else []  # fmt: skip
        records.append({"prompt": [*history, {"role": "user", "content": f"Tell me about {topic}."}],
                        "chosen": [{"role": "assistant", "content": f"{topic.capitalize()} are interesting."}],
                        "rejected": [{"role": "assistant", "content": f"I do not know about {topic}."}]})  # fmt: skip
    path = tmp_path / "long.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    import_file(path, engine=engine, campaign="long", fmt="trl", license="MIT")
    return "long"


def test_long_dialogues_are_truncated_from_the_left_never_dropped(sqlite_engine, tmp_path, tiny_encoder, caplog):
    campaign = _long_campaign(sqlite_engine, tmp_path)
    run = train(RECIPES / "reward.yaml", _args(tmp_path, campaign, tiny_encoder, "long", "--max_length", "64"),
                engine=sqlite_engine)  # fmt: skip
    exported = json.loads((Path(run.output_path) / "data" / "export.json").read_text())["counts"]
    metrics = json.loads((Path(run.output_path) / "model" / "metrics.json").read_text())
    assert metrics["pairs"] == {split: exported[split] for split in metrics["pairs"]}  # every exported pair trained
    truncated = metrics["truncated_pairs"]
    assert 0 < truncated["train"] < exported["train"] and truncated == run.metrics["truncated_pairs"]
    assert f"train: {truncated['train']} of {exported['train']} pairs left-truncated to max_length 64" in caplog.text


def test_left_truncation_keeps_the_end_where_the_replies_differ(tiny_encoder):
    tokenizer = load_tokenizer(ModelArguments(model_name_or_path=tiny_encoder))
    history = [{"role": "user", "content": "Tell me about owls. Owls are interesting and useful."}] * 6
    rows = Dataset.from_list([
        {"prompt": history, "chosen": [{"role": "assistant", "content": "Owls are useful."}],
         "rejected": [{"role": "assistant", "content": "Honey is useful."}], "margin": 1.0},
        {"prompt": history[:1], "chosen": [{"role": "assistant", "content": "Owls."}],
         "rejected": [{"role": "assistant", "content": "Salt."}], "margin": 0.5},
    ])  # fmt: skip
    full, _ = tokenize_pairs(rows, tokenizer, None)
    cut, truncated = tokenize_pairs(rows, tokenizer, 48)
    assert truncated == 1 and cut["margin"] == [1.0, 0.5]
    assert len(full[0]["chosen_ids"]) > 48 and cut[1] == full[1]  # the short pair is untouched
    for side in ("chosen_ids", "rejected_ids"):
        ids, whole = cut[0][side], full[0][side]
        head = whole[:1] if whole[0] in tokenizer.all_special_ids else []  # e.g. BOS or CLS stays first
        assert len(ids) == 48 and ids == head + whole[len(whole) - 48 + len(head) :]
    assert cut[0]["chosen_ids"] != cut[0]["rejected_ids"]
    assert left_truncate([7, 1, 2, 3, 4], 3, keep_first=False) == [2, 3, 4]
    assert left_truncate([7, 1, 2, 3, 4], 3, keep_first=True) == [7, 3, 4]


def test_a_run_on_an_exported_folder_keeps_its_lineage_and_warns_when_stale(sqlite_engine, tmp_path, tiny_causal_lm,
                                                                             caplog):  # fmt: skip
    campaign = seed_campaign(sqlite_engine, tmp_path)
    result = export_campaign(engine=sqlite_engine, campaign=campaign, kind="sft", out_dir=tmp_path / "exported",
                             test_fraction=0.2)  # fmt: skip
    with write_session(sqlite_engine) as session, session.begin():
        session.get(ExportRecord, result.export_id).stale = True  # as storage.erasure marks it
    args = _args(tmp_path, "", tiny_causal_lm, "from-folder", "--dataset", str(tmp_path / "exported"))
    with caplog.at_level(logging.WARNING, logger="alignment.source"):
        run = train(RECIPES / "sft.yaml", args, engine=sqlite_engine)
    assert run.status == "finished" and run.export_ids == [result.export_id] and run.data_source.endswith("exported")
    assert f"export #{result.export_id}" in caplog.text and "erased since" in caplog.text
