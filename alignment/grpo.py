"""Group relative policy optimisation (Shao et al. 2024): a completion's advantage is its reward against the mean
reward of its prompt's group. TRL's GRPOTrainer with a Concord reward model (alignment.online)."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict
from trl import GRPOTrainer

from alignment.arguments import DataArguments, ModelArguments
from alignment.online import GRPOArguments, train_online


def main(
    data_args: DataArguments, training_args: GRPOArguments, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset``'s prompts; metrics include the held-out reward before and after."""
    return train_online(GRPOTrainer, training_args, model_args, dataset)
