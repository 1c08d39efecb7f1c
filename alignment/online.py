"""Online RL through TRL's trainers (alignment.rloo, alignment.grpo) on a campaign's prompts, rewarded by a Concord
reward model that keeps its own tokenizer and chat template, as PPO's does (alignment.rollout.reward_scores).

Each config is TRL's plus the two fields that name and bound the reward model; everything else (groups of
``num_generations`` completions per prompt, ``beta`` for the KL term, clipping) is TRL's, documented there. The
held-out prompts are answered and scored by TRL's own evaluation before and after training, so metrics.json says
whether the reward rose on prompts the policy never trained on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from accelerate import PartialState
from datasets import Dataset, DatasetDict
from trl import GRPOConfig, RLOOConfig, get_peft_config

from alignment.arguments import ModelArguments
from alignment.data import distinct_prompts
from alignment.model import load_causal_lm, load_tokenizer, train_and_evaluate
from alignment.rollout import load_scorer, reward_scores

log = logging.getLogger(__name__)


@dataclass
class RewardModelArguments:
    """The reward model of an online run."""

    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "The reward model: a Concord reward run (run:NAME), a folder or a hub id of a one-score "
                          "sequence classifier. It keeps its own tokenizer: completions are rendered for it."},
    )  # fmt: skip
    reward_max_length: int | None = field(
        default=512, metadata={"help": "Longest reward-model input (its tokens); longer dialogues are cut from the "
                                       "left, as reward training cut them."}
    )  # fmt: skip


@dataclass
class RLOOArguments(RewardModelArguments, RLOOConfig):
    """TRL's RLOOConfig and the reward model."""


@dataclass
class GRPOArguments(RewardModelArguments, GRPOConfig):
    """TRL's GRPOConfig and the reward model."""


def reward_function(args: RewardModelArguments, model_args: ModelArguments) -> Callable[..., list[float]]:
    """The reward model as a TRL reward function: ``(prompts, completions) -> scores``, prompts and completions in
    conversational form (lists of messages) as a campaign's prompts make them."""
    reward_args = dataclasses.replace(model_args, model_name_or_path=args.reward_model_path, gguf_file=None,
                                      use_peft=False, load_in_4bit=False, load_in_8bit=False)  # fmt: skip
    tokenizer = load_tokenizer(reward_args)
    device = PartialState().device
    model = load_scorer(reward_args, tokenizer).to(device).eval().requires_grad_(False)

    def concord_reward(prompts: list[list[dict]], completions: list[list[dict]], **_: Any) -> list[float]:
        texts = [completion[-1]["content"] for completion in completions]
        scores = reward_scores(model, tokenizer, prompts, texts, args.reward_max_length,
                               args.per_device_eval_batch_size, device)  # fmt: skip
        return scores.tolist()

    return concord_reward


def _prompt_rows(dataset: DatasetDict, split: str) -> Dataset | None:
    if split not in dataset or not dataset[split].num_rows:
        return None
    return Dataset.from_dict({"prompt": distinct_prompts(dataset[split])})


def train_online(trainer_class, args, model_args: ModelArguments, dataset: DatasetDict) -> dict[str, Any]:
    """Train the policy with ``trainer_class`` (RLOOTrainer or GRPOTrainer) on the train prompts; the test prompts,
    answered before and after, give ``heldout_reward_start`` and ``heldout_reward``."""
    train, test = _prompt_rows(dataset, "train"), _prompt_rows(dataset, "test")
    trainer = trainer_class(
        model=load_causal_lm(model_args),
        reward_funcs=reward_function(args, model_args),
        args=args,
        train_dataset=train,
        eval_dataset=test,
        processing_class=load_tokenizer(model_args),
        peft_config=get_peft_config(model_args),
    )
    start = {}
    if test is not None and not args.resume_from_checkpoint:
        start = {"heldout_reward_start": trainer.evaluate()["eval_reward"]}
        log.info("held-out reward before training: %.4f", start["heldout_reward_start"])
    headline = {"heldout_reward": "eval_reward", "heldout_kl": "eval_kl"}
    return train_and_evaluate(trainer, test is not None, headline, extra=start)
