"""Direct preference optimisation on chosen/rejected pairs, against a frozen reference: the policy's starting point."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict
from trl import DPOConfig, DPOTrainer

from alignment.arguments import DataArguments, ModelArguments
from alignment.model import preference_trainer, train_and_evaluate

HEADLINE = {"heldout_reward_accuracy": "eval_rewards/accuracies", "heldout_reward_margin": "eval_rewards/margins"}


def build_trainer(
    training_args: DPOConfig, model_args: ModelArguments, dataset: DatasetDict, *, model=None, ref_model=None,
    tokenizer=None,
) -> DPOTrainer:  # fmt: skip
    """The trainer over ``dataset``'s splits, its reference the policy's starting point (alignment.model)."""
    return preference_trainer(DPOTrainer, "dpo", training_args, model_args, dataset, model=model, ref_model=ref_model,
                              tokenizer=tokenizer)  # fmt: skip


def main(
    data_args: DataArguments, training_args: DPOConfig, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset`` (prompt/chosen/rejected); metrics include held-out reward accuracy and margin."""
    trainer = build_trainer(training_args, model_args, dataset)
    return train_and_evaluate(trainer, trainer.eval_dataset is not None, HEADLINE)
