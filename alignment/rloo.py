"""REINFORCE leave-one-out (Ahmadian et al. 2024): a completion's advantage is its reward less the mean reward of
the other completions of its prompt. TRL's RLOOTrainer with a Concord reward model (alignment.online)."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict
from trl import RLOOTrainer

from alignment.arguments import DataArguments, ModelArguments
from alignment.online import RLOOArguments, train_online


def main(
    data_args: DataArguments, training_args: RLOOArguments, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset``'s prompts; metrics include the held-out reward before and after."""
    return train_online(RLOOTrainer, training_args, model_args, dataset)
