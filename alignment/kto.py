"""KTO on unpaired completions labelled desirable or not (each exported pair gives one of each)."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict
from trl import KTOConfig, KTOTrainer

from alignment.arguments import DataArguments, ModelArguments
from alignment.model import preference_trainer, train_and_evaluate

HEADLINE = {"heldout_loss": "eval_loss", "heldout_reward_margin": "eval_rewards/margins"}


def build_trainer(
    training_args: KTOConfig, model_args: ModelArguments, dataset: DatasetDict, *, model=None, ref_model=None,
    tokenizer=None,
) -> KTOTrainer:  # fmt: skip
    """The trainer over ``dataset``'s splits, its reference the policy's starting point (alignment.model)."""
    return preference_trainer(KTOTrainer, "kto", training_args, model_args, dataset, model=model, ref_model=ref_model,
                              tokenizer=tokenizer)  # fmt: skip


def main(
    data_args: DataArguments, training_args: KTOConfig, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset`` (prompt/completion/label); metrics include held-out loss and rewards."""
    trainer = build_trainer(training_args, model_args, dataset)
    return train_and_evaluate(trainer, trainer.eval_dataset is not None, HEADLINE)
