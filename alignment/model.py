"""Model and tokenizer construction, and the train -> save -> evaluate -> metrics.json end every method shares."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)
from trl import ModelConfig

log = logging.getLogger(__name__)

CHATML = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{%- else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""ChatML with {% generation %} markers around each assistant reply and its <|im_end|>: what assistant-only loss
needs (the end-of-turn token inside, so the model learns to stop)."""


def _pretrained_kwargs(model_args: ModelConfig) -> dict[str, Any]:
    return {"revision": model_args.model_revision, "dtype": model_args.dtype,
            "attn_implementation": model_args.attn_implementation}  # fmt: skip


def load_tokenizer(model_args: ModelConfig) -> PreTrainedTokenizerBase:
    """The model's tokenizer; without a chat template (an encoder) it gets ChatML, and without EOS its SEP token."""
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.chat_template is None:
        log.info("%s has no chat template: using ChatML", model_args.model_name_or_path)
        tokenizer.chat_template = CHATML
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:  # BERT-like encoders end a text with SEP
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model_args: ModelConfig):
    """A causal LM from a hub id or a local folder, in the recipe's dtype."""
    return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **_pretrained_kwargs(model_args))


def load_reward_model(model_args: ModelConfig, tokenizer: PreTrainedTokenizerBase):
    """A one-score sequence classifier whose config knows the pad token (it finds each text's last token by it)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=1, **_pretrained_kwargs(model_args)
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def train_and_evaluate(trainer, has_test: bool, headline: dict[str, str]) -> dict[str, Any]:
    """Train, save model and tokenizer to the output folder, evaluate on test, write and return metrics.json.

    ``headline`` names, for this method, the eval metrics that matter (e.g. reward's pairwise accuracy).
    """
    result = trainer.train()
    if not math.isfinite(result.training_loss):
        raise FloatingPointError(f"training loss is {result.training_loss}: lower the learning rate or check the data")
    output = Path(trainer.args.output_dir)
    trainer.save_model(str(output))
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "train_steps": result.global_step}
    if has_test:
        evaluation = trainer.evaluate()
        metrics |= {name: evaluation[key] for name, key in headline.items() if key in evaluation}
        metrics["eval"] = evaluation
    else:
        metrics["eval"] = "no test rows: nothing held out to evaluate on"
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    log.info("metrics: %s", {k: v for k, v in metrics.items() if k != "eval"})
    return metrics
