"""Reward model: a one-score sequence classifier trained on chosen/rejected pairs (with the raters' margins).

Pairs are tokenized here, not by TRL: RewardTrainer drops every pair longer than ``max_length``, which would
silently lose exactly the long dialogues. Each side is cut from the left instead, keeping the final turns (where
chosen and rejected differ) and a leading special token (BOS / CLS) when there is one; the count is reported.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase
from trl import RewardConfig, RewardTrainer

from alignment.arguments import DataArguments, ModelArguments
from alignment.data import training_columns
from alignment.model import load_reward_model, load_tokenizer, reward_peft_config, train_and_evaluate
from storage.quality.pairwise import pairwise_figures

log = logging.getLogger(__name__)

HEADLINE = {"heldout_pairwise_accuracy": "eval_accuracy", "heldout_mean_margin": "eval_margin"}


def _token_ids(tokenizer: PreTrainedTokenizerBase, prompt, completion) -> list[int]:
    """Prompt and completion as TRL's RewardTrainer would tokenize them (chat template, or text ending in EOS)."""
    if isinstance(completion, list):
        return tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    text = prompt + completion
    return tokenizer(text=text if text.endswith(tokenizer.eos_token) else text + tokenizer.eos_token)["input_ids"]


def left_truncate(ids: list[int], max_length: int, keep_first: bool) -> list[int]:
    """The last tokens of ``ids`` that fit in ``max_length``, after the first token when ``keep_first``."""
    if len(ids) <= max_length:
        return ids
    head = ids[:1] if keep_first else []
    return head + ids[len(ids) - (max_length - len(head)) :]


def tokenize_pairs(rows: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int | None) -> tuple[Dataset, int]:
    """``rows`` (prompt/chosen/rejected[/margin]) as chosen_ids/rejected_ids[/margin], each side left-truncated to
    ``max_length``; returns them and how many pairs were truncated."""
    if max_length is not None and max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens; got {max_length}")
    special = set(tokenizer.all_special_ids)

    def encode(row: dict[str, Any]) -> dict[str, Any]:
        out = {"truncated": False}
        for side in ("chosen", "rejected"):
            ids = _token_ids(tokenizer, row["prompt"], row[side])
            if max_length is not None and len(ids) > max_length:
                ids, out["truncated"] = left_truncate(ids, max_length, ids[0] in special), True
            out[f"{side}_ids"] = ids
        return out

    dropped = [name for name in rows.column_names if name != "margin"]
    encoded = rows.map(encode, remove_columns=dropped, desc="Tokenizing pairs, truncating from the left")
    return encoded.remove_columns("truncated"), sum(encoded["truncated"])


@torch.inference_mode()
def score_encoded(model, tokenizer: PreTrainedTokenizerBase, encoded: Dataset, batch_size: int = 32,
                  dropout: bool = False) -> dict:  # fmt: skip
    """Each pair's chosen and rejected score from token ids (``tokenize_pairs``'s rows), in batches of similar
    length so little is padding; with ``dropout`` the model's dropout stays on (one Monte Carlo sample)."""
    model.train(dropout)
    device = next(model.parameters()).device
    scores = {}
    for side in ("chosen", "rejected"):
        ids = encoded[f"{side}_ids"]
        order, out = np.argsort([len(i) for i in ids]), np.empty(len(ids))
        for start in range(0, len(ids), batch_size):
            batch = order[start : start + batch_size]
            padded = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(device)
            out[batch] = model(**padded).logits[:, 0].float().cpu().numpy()
        scores[side] = out
    return scores


def reply_lengths(completions: list) -> np.ndarray:
    """Characters of each completion's final reply (conversational: its last message)."""
    return np.array([len(c[-1]["content"] if isinstance(c, list) else c) for c in completions])


def score_rows(model, tokenizer: PreTrainedTokenizerBase, rows: Dataset, max_length: int | None) -> dict:
    """Each row's chosen and rejected score (prompt/chosen/rejected rows), every pair cut from the left to
    ``max_length`` as the model was trained."""
    encoded, _ = tokenize_pairs(rows.select_columns(["prompt", "chosen", "rejected"]), tokenizer, max_length)
    return score_encoded(model, tokenizer, encoded)


def pair_figures(model, tokenizer: PreTrainedTokenizerBase, rows: Dataset, max_length: int | None) -> dict:
    """storage.quality.pairwise's figures for ``model`` on ``rows`` (prompt/chosen/rejected)."""
    scores = score_rows(model, tokenizer, rows, max_length)
    return pairwise_figures(scores["chosen"], scores["rejected"], reply_lengths(rows["chosen"]),
                            reply_lengths(rows["rejected"]))  # fmt: skip


def build_trainer(
    training_args: RewardConfig, model_args: ModelArguments, dataset: DatasetDict, *, model=None, tokenizer=None
) -> tuple[RewardTrainer, dict[str, Any]]:
    """The trainer over ``dataset``'s train and test splits, and the truncation counts. Without ``model``, the model
    is loaded from ``model_args`` (with its LoRA config); a given model is used as is (e.g. a trained one)."""
    tokenizer = tokenizer or load_tokenizer(model_args)
    encoded, truncated = {}, {}
    with training_args.main_process_first(local=False, desc="tokenizing pairs"):  # the others read its cache
        for split, rows in training_columns(dataset, "reward").items():
            if rows.num_rows:  # an empty split (test_fraction 0) has nothing to tokenize
                encoded[split], truncated[split] = tokenize_pairs(rows, tokenizer, training_args.max_length)
    for split, count in truncated.items():
        level = logging.WARNING if count else logging.INFO
        log.log(level, "%s: %d of %d pairs left-truncated to max_length %s tokens", split, count,
                encoded[split].num_rows, training_args.max_length)  # fmt: skip
    peft_config = None
    if model is None:
        model = load_reward_model(model_args, tokenizer)
        peft_config = reward_peft_config(model_args, model)
    has_test = "test" in encoded and encoded["test"].num_rows > 0
    trainer = RewardTrainer(model=model, args=training_args, train_dataset=encoded["train"],
                            eval_dataset=encoded["test"] if has_test else None, processing_class=tokenizer,
                            peft_config=peft_config)  # fmt: skip
    kept = {"train": trainer.train_dataset} | ({"test": trainer.eval_dataset} if has_test else {})
    for split, rows in kept.items():  # every pair fits, so TRL's length filter must keep all: check it did
        if len(rows) != encoded[split].num_rows:
            raise RuntimeError(f"RewardTrainer dropped {encoded[split].num_rows - len(rows)} {split} pairs")
    pairs = {split: rows.num_rows for split, rows in encoded.items()}
    return trainer, {"pairs": pairs, "truncated_pairs": truncated, "max_length": training_args.max_length}


def main(
    data_args: DataArguments, training_args: RewardConfig, model_args: ModelArguments, dataset: DatasetDict
) -> dict[str, Any]:
    """Train on ``dataset`` (prompt/chosen/rejected[/margin]); metrics include held-out pairwise accuracy (a tie
    counted wrong) with its 95% interval and the length figures of ``pair_figures``."""
    trainer, extra = build_trainer(training_args, model_args, dataset)

    def heldout(trainer) -> dict[str, Any]:
        zero3 = getattr(trainer.accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3
        if zero3 or not trainer.is_world_process_zero():  # ZeRO-3 shards the weights: `launch.py eval` scores then
            return {}
        figures = pair_figures(trainer.model, trainer.processing_class, dataset["test"], training_args.max_length)
        return {"heldout_pairwise_accuracy": figures["accuracy"], "heldout_mean_margin": figures["mean_margin"],
                "heldout_pairwise": figures}  # fmt: skip

    return train_and_evaluate(trainer, trainer.eval_dataset is not None, HEADLINE, extra, heldout=heldout)
