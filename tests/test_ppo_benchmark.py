"""benchmarks/ppo.py's mapping of the tiny PPO recipe onto TRL 1.12's PPOConfig: the same rollout batch, mini-batches,
optimiser steps and PPO hyperparameters. TRL 1.12 is not installed here: its batch arithmetic is restated below."""

import importlib
from pathlib import Path

import pytest

from alignment.recipe import parse_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # benchmarks/ is a folder of scripts, not an installed package
    return importlib.import_module("benchmarks.ppo")


def _args(bench, *extra: str):
    setup = {"policy": "policy", "reward": "reward"}
    return parse_recipe(bench.RECIPE, [*bench.ours_overrides(setup, seed=3, steps=30, output_root="runs"), *extra])[1]


def _trl_schedule(config: dict, loader_batches: int) -> tuple[int, int, int]:
    """TRL 1.12 PPOTrainer's rollout batch, episodes per mini-batch and optimiser steps per PPO step (one process):
    local_batch_size = per_device x accumulation; accelerate steps every accumulation-th micro-batch, or every one
    while the prompt loader sits on its last batch."""
    rollout = config["per_device_train_batch_size"] * config["gradient_accumulation_steps"]
    mini_batch = rollout // config["num_mini_batches"]
    micro_batches = config["num_ppo_epochs"] * rollout // config["per_device_train_batch_size"]
    every = 1 if loader_batches == 1 else config["gradient_accumulation_steps"]
    return rollout, mini_batch, micro_batches // every


def test_the_tiny_recipe_maps_field_by_field_onto_trl_ppo(bench):
    args = _args(bench)
    config = bench.trl_config(args, steps=30, output_dir="out")

    assert (args.rollout_batch_size, args.num_mini_batches, args.per_device_train_batch_size) == (16, 2, 4)
    assert config["per_device_train_batch_size"] == 8 and config["gradient_accumulation_steps"] == 2
    assert config["num_mini_batches"] == 2 and config["total_episodes"] == 30 * 16
    # The benchmark's 19 prompts make one loader batch of 16: 8 optimiser steps of 8 episodes, as ours takes.
    assert _trl_schedule(config, loader_batches=19 // 16) == (16, 8, args.num_ppo_epochs * args.num_mini_batches)
    expected = {"num_ppo_epochs": 4, "response_length": 8, "temperature": 1.0, "kl_coef": 0.05, "kl_estimator": "k1",
                "cliprange": 0.2, "cliprange_value": 0.2, "vf_coef": 0.1, "gamma": 1.0, "lam": 0.95,
                "whiten_rewards": False, "missing_eos_penalty": None, "learning_rate": 5e-3,
                "lr_scheduler_type": "constant", "warmup_steps": 0, "seed": 3, "stop_token": "eos",
                "local_rollout_forward_batch_size": 16, "use_cpu": True, "bf16": False}  # fmt: skip
    assert {name: config[name] for name in expected} == expected


def test_a_changed_recipe_field_follows_into_the_trl_config(bench):
    args = _args(bench, "--kl_coef", "0.2", "--kl_estimator", "k3", "--whiten_rewards", "true",
                 "--missing_eos_penalty", "1.5", "--rollout_batch_size", "32", "--num_mini_batches", "4")  # fmt: skip
    config = bench.trl_config(args, steps=5, output_dir="out")

    assert (config["kl_coef"], config["kl_estimator"], config["whiten_rewards"]) == (0.2, "k3", True)
    assert config["missing_eos_penalty"] == 1.5 and config["total_episodes"] == 5 * 32
    assert _trl_schedule(config, loader_batches=1) == (32, 8, args.num_ppo_epochs * 4)


def test_an_adaptive_kl_coefficient_cannot_be_mapped(bench):
    with pytest.raises(ValueError, match="no adaptive KL"):
        bench.trl_config(_args(bench, "--kl_target", "1.0"), steps=5, output_dir="out")
