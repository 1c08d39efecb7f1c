"""Direct preference optimisation on chosen/rejected pairs; the reference model is TRL's frozen copy."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict
from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config

from alignment.arguments import DataArguments
from alignment.data import training_columns
from alignment.model import load_causal_lm, load_tokenizer, train_and_evaluate


def main(
    data_args: DataArguments, training_args: DPOConfig, model_args: ModelConfig, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset`` (prompt/chosen/rejected); metrics include held-out reward accuracy and margin."""
    dataset = training_columns(dataset, "dpo")
    has_test = "test" in dataset and dataset["test"].num_rows > 0
    trainer = DPOTrainer(
        model=load_causal_lm(model_args),
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"] if has_test else None,
        processing_class=load_tokenizer(model_args),
        peft_config=get_peft_config(model_args),
    )
    headline = {"heldout_reward_accuracy": "eval_rewards/accuracies", "heldout_reward_margin": "eval_rewards/margins"}
    return train_and_evaluate(trainer, has_test, headline)
