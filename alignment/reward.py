"""Reward model: a one-score sequence classifier trained on chosen/rejected pairs (with the raters' margins)."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict
from trl import ModelConfig, RewardConfig, RewardTrainer, get_peft_config

from alignment.arguments import DataArguments
from alignment.data import training_columns
from alignment.model import load_reward_model, load_tokenizer, train_and_evaluate


def main(
    data_args: DataArguments, training_args: RewardConfig, model_args: ModelConfig, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset`` (prompt/chosen/rejected[/margin]); metrics include held-out pairwise accuracy."""
    tokenizer = load_tokenizer(model_args)
    dataset = training_columns(dataset, "reward")
    has_test = "test" in dataset and dataset["test"].num_rows > 0
    trainer = RewardTrainer(
        model=load_reward_model(model_args, tokenizer),
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"] if has_test else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    headline = {"heldout_pairwise_accuracy": "eval_accuracy", "heldout_mean_margin": "eval_margin"}
    return train_and_evaluate(trainer, has_test, headline)
