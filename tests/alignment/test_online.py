"""RLOO and GRPO (TRL's trainers, alignment.online) end to end on tiny models: the toy reward rises on held-out
prompts, and the reward function scores completions rendered with the reward model's own template."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignment.arguments import ModelArguments
from alignment.evaluate import evaluate_run
from alignment.online import GRPOArguments, reward_function
from alignment.runner import train
from tests.alignment.conftest import seed_campaign

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_online_rl_raises_the_toy_reward_on_heldout_prompts(method, sqlite_engine, tmp_path, tiny_causal_lm,
                                                            toy_reward):  # fmt: skip
    campaign = seed_campaign(sqlite_engine, tmp_path)
    overrides = ["--model_name_or_path", tiny_causal_lm, "--reward_model_path", toy_reward, "--campaign", campaign,
                 "--output_root", str(tmp_path / "runs"), "--run_name", method, "--max_steps", "80"]  # fmt: skip

    run = train(RECIPES / f"{method}.yaml", overrides, engine=sqlite_engine)

    metrics = run.metrics
    assert run.status == "finished" and run.data_source == campaign and metrics["train_steps"] == 80
    assert metrics["heldout_reward"] > metrics["heldout_reward_start"] + 0.2, metrics
    assert run.recipe["training"]["reward_model_path"] == toy_reward
    assert (Path(run.output_path) / "model" / "model.safetensors").is_file()
    heldout = evaluate_run(Path(run.output_path))  # the saved policy and its start answer the held-out prompts
    assert heldout["heldout_score"] > heldout["heldout_score_start"] + 0.2, heldout
    gain = heldout["heldout_score"] - heldout["heldout_score_start"]
    assert heldout["heldout_gain"] == pytest.approx(gain, abs=1e-5)
    assert heldout["heldout_gain_ci_low"] > 0 and heldout["heldout_prompts_improved"] > 0.5
    assert heldout["heldout_kl"] > 0.01 and 0 < heldout["response_length"] <= 8


def test_the_reward_function_scores_with_the_reward_models_own_tokenizer(tiny_causal_lm, toy_reward):
    """Completions arrive as messages; each is rendered with the prompt through the reward model's chat template."""
    args = GRPOArguments(output_dir="unused", use_cpu=True, reward_model_path=toy_reward, report_to="none",
                         per_device_eval_batch_size=2)  # fmt: skip
    score = reward_function(args, ModelArguments(model_name_or_path=tiny_causal_lm, dtype="float32"))
    prompts = [[{"role": "user", "content": "Tell me about owls."}]] * 3
    texts = ["eee eee", "xyz", "Owls are interesting."]
    got = score(prompts=prompts, completions=[[{"role": "assistant", "content": t}] for t in texts])

    model, tokenizer = (
        AutoModelForSequenceClassification.from_pretrained(toy_reward),
        AutoTokenizer.from_pretrained(toy_reward),
    )
    for prompt, text, value in zip(prompts, texts, got, strict=True):
        ids = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": text}], return_tensors="pt",
                                            return_dict=True)  # fmt: skip
        with torch.no_grad():
            assert value == pytest.approx(model(**ids).logits[0, 0].item(), abs=1e-5)
    assert got[0] > got[1]


def test_an_online_run_without_heldout_prompts_trains_and_says_so(sqlite_engine, tmp_path, tiny_causal_lm, toy_reward):
    """test_fraction 0: every prompt trains, the empty test split keeps its columns, no held-out reward is made up."""
    campaign = seed_campaign(sqlite_engine, tmp_path)
    overrides = ["--model_name_or_path", tiny_causal_lm, "--reward_model_path", toy_reward, "--campaign", campaign,
                 "--output_root", str(tmp_path / "runs"), "--run_name", "all-train", "--max_steps", "2",
                 "--test_fraction", "0"]  # fmt: skip
    run = train(RECIPES / "grpo.yaml", overrides, engine=sqlite_engine)
    assert run.status == "finished" and run.metrics["train_steps"] == 2
    assert "heldout_reward" not in run.metrics and run.metrics["eval"].startswith("no test rows")
