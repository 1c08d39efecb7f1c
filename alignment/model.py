"""Model and tokenizer construction, and the train -> save -> evaluate -> metrics.json end every method shares."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any

from accelerate import PartialState
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.initialization import no_init_weights
from trl import get_peft_config, get_quantization_config

from alignment.arguments import ModelArguments
from alignment.data import training_columns
from alignment.progress import HISTORY, LogHistoryCallback

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
ENCODER_TURNS = (
    "{{ cls_token }}{%- for message in messages %}"
    "{{ message['role'] | capitalize + ': ' + message['content'] + '\n' }}"
    "{%- endfor %}{{ sep_token }}"
)
"""The template an encoder (a reward model's backbone, e.g. BERT) gets: its CLS token first, where the classifier
reads the text (a chat template adds no special tokens of its own), then "User: ...", "Assistant: ...", which cost
two word pieces a turn where ChatML's markers cost about sixteen of the few hundred tokens it can read."""


def check_loadable(model_args: ModelArguments) -> None:
    """Fail before any data is exported when the model cannot be loaded as the recipe asks."""
    quantized = model_args.load_in_4bit or model_args.load_in_8bit
    if quantized and model_args.gguf_file:
        raise ValueError("a GGUF model cannot also be loaded in 4 or 8 bits: drop gguf_file or load_in_4bit/8bit")
    if quantized and not model_args.use_peft:
        raise ValueError("a model loaded in 4 or 8 bits trains only through adapters: set use_peft true (QLoRA)")
    if quantized and importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("load_in_4bit / load_in_8bit need bitsandbytes and a CUDA GPU (pip install -e '.[gpu]')")


def _pretrained_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype,
              "attn_implementation": model_args.attn_implementation}  # fmt: skip
    if model_args.gguf_file:
        kwargs["gguf_file"] = model_args.gguf_file
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": PartialState().local_process_index}  # each process quantizes onto its own GPU
    return kwargs


def _without_gguf_quantizer(model: PreTrainedModel) -> PreTrainedModel:
    """GGUF weights arrive dequantized, but the model keeps the GGUF quantizer, which refuses save_pretrained (so
    checkpoints too): the same weights in a fresh model of the same class save as ordinary safetensors."""
    config = model.config
    del config.quantization_config
    with no_init_weights():  # every weight is overwritten just below
        plain = type(model)(config).to(model.dtype)
    plain.load_state_dict(model.state_dict())
    if getattr(model, "generation_config", None) is not None:  # a sequence classifier (a value model) has none
        plain.generation_config = model.generation_config
    return plain


def load_tokenizer(model_args: ModelArguments) -> PreTrainedTokenizerBase:
    """The model's tokenizer. Without a chat template an encoder (it has a CLS token) gets ``ENCODER_TURNS`` and any
    other model ChatML; without EOS it gets its SEP token."""
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision,
                                              gguf_file=model_args.gguf_file)  # fmt: skip
    if tokenizer.chat_template is None:
        encoder = tokenizer.cls_token is not None
        template = "plain turns" if encoder else "ChatML"
        log.info("%s has no chat template: using %s", model_args.model_name_or_path, template)
        tokenizer.chat_template = ENCODER_TURNS if encoder else CHATML
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:  # BERT-like encoders end a text with SEP
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model_args: ModelArguments) -> PreTrainedModel:
    """A causal LM from a hub id, a local folder or a GGUF file, in the recipe's dtype (quantized if it asks)."""
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **_pretrained_kwargs(model_args))
    return _without_gguf_quantizer(model) if model_args.gguf_file else model


def load_reward_model(model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A one-score sequence classifier whose config knows the pad token (it finds each text's last token by it)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=1, **_pretrained_kwargs(model_args)
    )
    model = _without_gguf_quantizer(model) if model_args.gguf_file else model
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def head_modules(model: PreTrainedModel) -> list[str]:
    """The top-level modules with weights outside the base model: a classifier's head (``score``, ``classifier``)."""
    return [name for name, child in model.named_children()
            if name != model.base_model_prefix and next(child.parameters(), None) is not None]  # fmt: skip


def reward_peft_config(model_args: ModelArguments, model: PreTrainedModel):
    """TRL's LoRA config for a reward model: sequence classification, its freshly initialised head trained in full
    and saved with the adapter (without it, the reloaded model would score with another random head)."""
    if not model_args.use_peft:
        return None
    heads = [name for name in head_modules(model) if name not in (model_args.lora_modules_to_save or [])]
    return get_peft_config(
        dataclasses.replace(
            model_args,
            lora_task_type="SEQ_CLS",
            lora_modules_to_save=[*(model_args.lora_modules_to_save or []), *heads],
        )
    )


def preference_trainer(trainer_class, method: str, training_args, model_args: ModelArguments, dataset, *,
                       model=None, ref_model=None, tokenizer=None):  # fmt: skip
    """A DPO or KTO trainer over ``dataset``'s train and test splits. Without ``model`` the policy is loaded from
    ``model_args`` (with its LoRA config), and the frozen reference is the policy's starting point: with LoRA the
    base under disabled adapters; with precomputed log-probs the policy before its first step; otherwise TRL reloads
    it from the policy's path (sharded like it under ZeRO-3), or, for a GGUF file TRL cannot reload, a copy."""
    dataset = training_columns(dataset, method)
    peft_config = None
    if model is None:
        model = load_causal_lm(model_args)
        peft_config = get_peft_config(model_args)
        if ref_model is None and peft_config is None and not training_args.precompute_ref_log_probs:
            ref_model = copy.deepcopy(model) if model_args.gguf_file else None
    has_test = "test" in dataset and dataset["test"].num_rows > 0
    return trainer_class(
        model=model,
        ref_model=ref_model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"] if has_test else None,
        processing_class=tokenizer or load_tokenizer(model_args),
        peft_config=peft_config,
    )


def train_and_evaluate(
    trainer, has_test: bool, headline: dict[str, str], extra: dict | None = None, heldout=None
) -> dict[str, Any]:
    """Train (from ``args.resume_from_checkpoint`` when set), save model and tokenizer to the output folder, evaluate
    on test, write metrics.json (on the main process) and return the metrics.

    ``headline`` names, for this method, the eval metrics that matter (e.g. reward's pairwise accuracy); ``extra``
    joins the metrics as is (e.g. how many pairs were truncated); ``heldout(trainer)``, when given, returns metrics
    of the trained model on test that replace or join the trainer's own (e.g. reward's per-pair figures).
    """
    trainer.add_callback(LogHistoryCallback(Path(trainer.args.output_dir) / HISTORY))  # the studio's live view
    result = trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    if not math.isfinite(result.training_loss):
        raise FloatingPointError(f"training loss is {result.training_loss}: lower the learning rate or check the data")
    output = Path(trainer.args.output_dir)
    trainer.save_model(str(output))
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "train_steps": result.global_step, **(extra or {})}
    if trainer.args.resume_from_checkpoint:
        metrics["resumed_from"] = Path(trainer.args.resume_from_checkpoint).name
    if has_test:
        evaluation = trainer.evaluate()
        metrics |= {name: evaluation[key] for name, key in headline.items() if key in evaluation}
        metrics |= heldout(trainer) if heldout else {}
        metrics["eval"] = evaluation
    else:
        metrics["eval"] = "no test rows: nothing held out to evaluate on"
    if trainer.is_world_process_zero():
        (output / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        log.info("metrics: %s", {k: v for k, v in metrics.items() if k != "eval"})
    return metrics
