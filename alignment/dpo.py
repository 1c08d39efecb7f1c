"""Direct preference optimisation on chosen/rejected pairs, against a frozen reference: the policy's starting point."""

from __future__ import annotations

import copy
from typing import Any

from datasets import DatasetDict
from trl import DPOConfig, DPOTrainer, get_peft_config

from alignment.arguments import DataArguments, ModelArguments
from alignment.data import training_columns
from alignment.model import load_causal_lm, load_tokenizer, train_and_evaluate

HEADLINE = {"heldout_reward_accuracy": "eval_rewards/accuracies", "heldout_reward_margin": "eval_rewards/margins"}


def build_trainer(
    training_args: DPOConfig, model_args: ModelArguments, dataset: DatasetDict, *, model=None, ref_model=None,
    tokenizer=None,
) -> DPOTrainer:  # fmt: skip
    """The trainer over ``dataset``'s train and test splits. Without ``model``, the policy is loaded from
    ``model_args`` (with its LoRA config) and the reference is a copy of it as loaded."""
    dataset = training_columns(dataset, "dpo")
    peft_config = None
    if model is None:
        model = load_causal_lm(model_args)
        peft_config = get_peft_config(model_args)
        # With LoRA the reference is the base under disabled adapters; with precomputed log-probs TRL uses the policy
        # before its first step; otherwise TRL reloads it from the policy's path (sharded like it under ZeRO-3). A
        # GGUF file it could not reload: a copy of the policy as loaded is the same starting point.
        if ref_model is None and peft_config is None and not training_args.precompute_ref_log_probs:
            ref_model = copy.deepcopy(model) if model_args.gguf_file else None
    has_test = "test" in dataset and dataset["test"].num_rows > 0
    return DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"] if has_test else None,
        processing_class=tokenizer or load_tokenizer(model_args),
        peft_config=peft_config,
    )


def main(
    data_args: DataArguments, training_args: DPOConfig, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset`` (prompt/chosen/rejected); metrics include held-out reward accuracy and margin."""
    trainer = build_trainer(training_args, model_args, dataset)
    return train_and_evaluate(trainer, trainer.eval_dataset is not None, HEADLINE)
