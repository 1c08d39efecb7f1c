"""What an export says of the models behind its rows, and its unpaired KTO rows (storage.export calls both).

Preference, reward and KTO rows name the producer of each response (``model_chosen`` / ``model_rejected``, a KTO
row's ``model``) and its sampling parameters (``generation_params_*``, JSON text). A KTO export also takes every
response that came with a known label (``Response.prior_label``: LLaMA-Factory's and TRL's unpaired rows) as one row
of its own, label_source ``prior``, unless prior labels are left out.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
from sqlalchemy import Text, cast, select
from sqlmodel import Session

from storage.models import Prompt, Response

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def unpaired_rows(*, session: Session, campaign_id: int) -> tuple[pa.Table, list[str], Counter]:
    """(rows, their prompts' content hashes for the split, provenance counts) of the labelled responses."""
    query = (
        select(Response.id, Response.prompt_id, Response.text, Response.author, Response.prior_label,
               cast(Response.generation_params, Text).label("generation_params"), Response.source, Response.license,
               cast(Prompt.messages, Text).label("messages"), Prompt.content_hash)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .where(Prompt.campaign_id == campaign_id, Response.prior_label.is_not(None))
        .order_by(Response.id)
    )  # fmt: skip
    rows = session.execute(query).all()
    table = pa.table({
        "prompt": pa.array([json.loads(r.messages) for r in rows], pa.list_(MESSAGE)),
        "completion": pa.array([[{"role": "assistant", "content": r.text}] for r in rows], pa.list_(MESSAGE)),
        "label": pa.array([bool(r.prior_label) for r in rows], pa.bool_()),
        "response_id": pa.array([r.id for r in rows], pa.int64()),
        "prompt_id": pa.array([r.prompt_id for r in rows], pa.int64()),
        "label_source": pa.array(["prior"] * len(rows), pa.string()),
        "model": pa.array([r.author for r in rows], pa.string()),
        "generation_params": pa.array([r.generation_params for r in rows], pa.string()),
    })  # fmt: skip
    return table, [r.content_hash for r in rows], Counter((r.source, r.license) for r in rows)


def with_unpaired(splits: dict[str, pa.Table], unpaired: pa.Table, is_test: np.ndarray) -> dict[str, pa.Table]:
    """The KTO splits with the unpaired rows after the pairs' rows; columns one side lacks are null on the other."""
    parts = {"train": unpaired.filter(pa.array(~is_test)), "test": unpaired.filter(pa.array(is_test))}
    return {
        name: pa.concat_tables([table, parts[name]], promote_options="permissive") if parts[name].num_rows else table
        for name, table in splits.items()
    }


def model_shares(splits: dict[str, pa.Table]) -> dict[str, dict[str, int]]:
    """Per model, the responses it wrote in the export and how many of them are chosen (desirable, for KTO)."""
    responses, chosen = Counter(), Counter()
    for table in splits.values():
        names = table.column_names
        if "model_chosen" in names:
            chosen.update(table["model_chosen"].to_pylist())
            responses.update(table["model_chosen"].to_pylist() + table["model_rejected"].to_pylist())
        elif "model" in names:
            models, labels = table["model"].to_pylist(), table["label"].to_pylist()
            responses.update(models)
            chosen.update(m for m, label in zip(models, labels, strict=True) if label)
    return {model: {"responses": n, "chosen": chosen[model]} for model, n in responses.most_common()}


def response_columns(responses: dict[str, Any], chosen_at: np.ndarray, rejected_at: np.ndarray, take) -> dict:
    """``model_*`` and ``generation_params_*`` columns of the chosen and rejected responses."""
    return {
        "model_chosen": take(responses["author"], chosen_at),
        "model_rejected": take(responses["author"], rejected_at),
        "generation_params_chosen": take(responses["generation_params"], chosen_at),
        "generation_params_rejected": take(responses["generation_params"], rejected_at),
    }
