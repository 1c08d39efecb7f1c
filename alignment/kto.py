"""KTO on unpaired completions labelled desirable or not (each exported pair gives one of each)."""

from __future__ import annotations

import copy
from typing import Any

from datasets import DatasetDict
from trl import KTOConfig, KTOTrainer, get_peft_config

from alignment.arguments import DataArguments, ModelArguments
from alignment.data import training_columns
from alignment.model import load_causal_lm, load_tokenizer, train_and_evaluate

HEADLINE = {"heldout_loss": "eval_loss", "heldout_reward_margin": "eval_rewards/margins"}


def build_trainer(
    training_args: KTOConfig, model_args: ModelArguments, dataset: DatasetDict, *, model=None, ref_model=None,
    tokenizer=None,
) -> KTOTrainer:  # fmt: skip
    """The trainer over ``dataset``'s train and test splits; the reference is chosen as in alignment.dpo."""
    dataset = training_columns(dataset, "kto")
    peft_config = None
    if model is None:
        model = load_causal_lm(model_args)
        peft_config = get_peft_config(model_args)
        if ref_model is None and peft_config is None and not training_args.precompute_ref_log_probs:
            ref_model = copy.deepcopy(model) if model_args.gguf_file else None  # TRL cannot reload a GGUF file
    has_test = "test" in dataset and dataset["test"].num_rows > 0
    return KTOTrainer(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"] if has_test else None,
        processing_class=tokenizer or load_tokenizer(model_args),
        peft_config=peft_config,
    )


def main(
    data_args: DataArguments, training_args: KTOConfig, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset`` (prompt/completion/label); metrics include held-out loss and rewards."""
    trainer = build_trainer(training_args, model_args, dataset)
    return train_and_evaluate(trainer, trainer.eval_dataset is not None, HEADLINE)
