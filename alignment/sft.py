"""Supervised fine-tuning on raters' demonstrations, with the loss on assistant turns only."""

from __future__ import annotations

import logging
from typing import Any

from datasets import DatasetDict
from trl import SFTConfig, SFTTrainer, get_peft_config
from trl.chat_template_utils import has_generation_markers

from alignment.arguments import DataArguments, ModelArguments
from alignment.data import training_columns
from alignment.model import CHATML, load_causal_lm, load_tokenizer, train_and_evaluate

log = logging.getLogger(__name__)

HEADLINE = {"heldout_loss": "eval_loss"}


def build_trainer(
    training_args: SFTConfig, model_args: ModelArguments, dataset: DatasetDict, *, model=None, tokenizer=None
) -> SFTTrainer:
    """The trainer over ``dataset``'s train and test splits (the model loaded from ``model_args`` unless given)."""
    tokenizer = tokenizer or load_tokenizer(model_args)
    template = tokenizer.chat_template
    if training_args.assistant_only_loss and not has_generation_markers(template) and "<|im_start|>" in template:
        # ChatML without markers: ours adds them. Other families are left to TRL's own training templates.
        log.info("adding {% generation %} markers to the ChatML template for assistant-only loss")
        tokenizer.chat_template = CHATML
    dataset = training_columns(dataset, "sft")
    has_test = "test" in dataset and dataset["test"].num_rows > 0
    return SFTTrainer(
        model=model if model is not None else load_causal_lm(model_args),
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"] if has_test else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args) if model is None else None,
    )


def main(
    data_args: DataArguments, training_args: SFTConfig, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Fine-tune on ``dataset`` (conversational ``messages``); returns the metrics written to metrics.json."""
    trainer = build_trainer(training_args, model_args, dataset)
    return train_and_evaluate(trainer, trainer.eval_dataset is not None, HEADLINE)
