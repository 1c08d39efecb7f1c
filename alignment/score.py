"""A reward-model run scores every pair of a campaign (``launch.py score``): PairScore rows that order the queue
(active selection), judge an evaluation campaign beside its raters, and point leads at likely label errors.

Each response is scored as reward training rendered it (the run's tokenizer and chat template, cut from the left to
its ``max_length``). With ``mc_dropout`` N > 1 the model also scores each pair N times with dropout on, and the spread
of the margin is stored as ``margin_std`` (zero for a model without dropout).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from sqlalchemy import Engine
from sqlmodel import Session, select

from alignment.evaluate import find_run_folder, run_configs
from alignment.model import load_tokenizer
from alignment.reward import score_encoded, tokenize_pairs
from alignment.rollout import load_scorer
from alignment.source import find_run
from storage.campaigns import campaign_id_for
from storage.db import write_session
from storage.models import Campaign, QueueOrder
from storage.scores import pairs_to_score, store_scores

log = logging.getLogger(__name__)


def _margins(model, tokenizer, encoded: Dataset, dropout: bool) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        scores = score_encoded(model, tokenizer, encoded, dropout=dropout)
    return scores["chosen"], scores["rejected"]


def score_pairs_with(run_dir: Path, pairs: list[dict[str, Any]], mc_dropout: int = 0) -> pd.DataFrame:
    """``pair_id``, ``score_a``, ``score_b`` and ``margin_std`` of each pair (``pairs_to_score`` rows) under the
    reward model saved in ``run_dir``."""
    data_args, training_args, model_args = run_configs(run_dir)
    if data_args.method != "reward":
        raise ValueError(f"{run_dir.name} is a {data_args.method} run: only a reward model scores pairs")
    saved = dataclasses.replace(model_args, model_name_or_path=str(run_dir / "model"), gguf_file=None,
                                load_in_4bit=False, load_in_8bit=False)  # fmt: skip
    tokenizer = load_tokenizer(saved)
    model = load_scorer(saved, tokenizer)
    rows = Dataset.from_list([{"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["a"]}],
                               "rejected": [{"role": "assistant", "content": p["b"]}]} for p in pairs])  # fmt: skip
    encoded, truncated = tokenize_pairs(rows, tokenizer, training_args.max_length)
    if truncated:
        log.warning("%d of %d pairs left-truncated to max_length %s tokens", truncated, len(pairs),
                    training_args.max_length)  # fmt: skip
    score_a, score_b = _margins(model, tokenizer, encoded, dropout=False)
    spread = np.zeros(len(pairs))
    if mc_dropout > 1:
        samples = [np.subtract(*_margins(model, tokenizer, encoded, dropout=True)) for _ in range(mc_dropout)]
        spread = np.std(samples, axis=0)
    return pd.DataFrame({"pair_id": [p["pair_id"] for p in pairs], "score_a": score_a, "score_b": score_b,
                         "margin_std": spread})  # fmt: skip


def score_campaign(*, engine: Engine, campaign: str, run: str, mc_dropout: int = 0) -> dict[str, Any]:
    """Score every pair of ``campaign`` with the reward-model run called ``run`` and store the scores (replacing that
    run's earlier scores of them); a summary of what was written."""
    with Session(engine) as session:
        campaign_id = campaign_id_for(session=session, name=campaign)
        found = find_run(run, session=session)
        if found is None:
            raise ValueError(f"no training run is called {run!r}: scores are stored against a run of this database")
        if found.status != "finished":
            raise ValueError(f"run {run!r} is {found.status}: only a finished run's model scores pairs")
        pairs = pairs_to_score(session=session, campaign_id=campaign_id)
    if not pairs:
        raise ValueError(f"campaign {campaign!r} has no pairs to score")
    log.info("scoring %d pairs of %r with %r", len(pairs), campaign, run)
    scores = score_pairs_with(find_run_folder(run, engine=engine), pairs, mc_dropout=mc_dropout)
    with write_session(engine) as session, session.begin():
        stored = store_scores(session=session, run_id=found.id, scores=scores)
    margin = scores["score_a"] - scores["score_b"]
    return {
        "campaign": campaign,
        "run": run,
        "pairs": stored,
        "mc_dropout": mc_dropout,
        "mean_abs_margin": float(margin.abs().mean()),
        "mean_margin_std": float(scores["margin_std"].mean()),
    }


def refresh_queue_scores(*, engine: Engine, campaign: str, run: str) -> dict[str, Any] | None:
    """Score ``campaign`` with the reward run ``run`` just trained on it when the campaign's queue follows a reward
    model (``queue_order`` not fifo), so that the queue follows the newest model; the summary, or None when the queue
    is fifo. A failure is logged and returns None: the run itself finished, and ``launch.py score`` can try again."""
    with Session(engine) as session:
        order = session.exec(select(Campaign.queue_order).where(Campaign.name == campaign)).first()
    if order is None or order == QueueOrder.fifo:
        return None
    try:
        result = score_campaign(engine=engine, campaign=campaign, run=run)
    except Exception:  # noqa: BLE001  (whatever broke, the trained model stays usable)
        log.exception("the %s queue of %r still follows its earlier scores: scoring it with %r failed", order,
                      campaign, run)  # fmt: skip
        return None
    log.info("the %s queue of %r now follows run %r: %d pairs scored", order, campaign, run, result["pairs"])
    return result
