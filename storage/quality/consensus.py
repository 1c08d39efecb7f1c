"""Consensus per item: majority vote, mean strength, the competence-weighted (Dawid-Skene) label, and agreement.

``item_consensus`` is the quality engine's table of every label an item could take. The array functions
(``majority_consensus``, ``mean_consensus``, ``weighted_consensus``, ``array_consensus``) take one row per judgment
(``item_index`` into ``range(n_items)``, ``preference`` -2..2) and are what the export labels pairs with. One draw
rule holds everywhere: ``storage.quality.judgments.majority`` calls a draw for the most votes (or the most probable
class) undecided, which the array functions return as a tie (0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.quality.competence import dawid_skene
from storage.quality.judgments import first_judgments, judgment_frame, label_counts, majority

POLICIES = ("majority", "mean", "weighted")


def _decided(scores: np.ndarray) -> np.ndarray:
    """The direction of the highest score in each row of an items x DIRECTIONS array; a draw is a tie (0)."""
    return np.nan_to_num(majority(scores)).astype(np.int64)


def _strength(item_index: np.ndarray, preference: np.ndarray, direction: np.ndarray, n_items: int) -> np.ndarray:
    """Mean |preference| of each item's judgments whose sign is its direction (0 where none is)."""
    agrees = np.sign(preference) == direction[item_index]
    total = np.bincount(item_index, weights=np.abs(preference) * agrees, minlength=n_items)
    return total / np.maximum(np.bincount(item_index, weights=agrees, minlength=n_items), 1)


def majority_consensus(item_index: np.ndarray, preference: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the direction (-1 A, 0 tie, 1 B) with the most votes by sign, and the strength: mean |preference|
    of the winning votes."""
    votes = np.bincount(item_index * 3 + np.sign(preference) + 1, minlength=3 * n_items).reshape(n_items, 3)
    direction = _decided(votes)
    return direction, _strength(item_index, preference, direction, n_items)


def mean_consensus(item_index: np.ndarray, preference: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the -2..2 preferences: its sign is the direction, its magnitude the strength."""
    total = np.bincount(item_index, weights=preference, minlength=n_items)
    mean = total / np.maximum(np.bincount(item_index, minlength=n_items), 1)
    return np.sign(mean).astype(np.int64), np.abs(mean)


def weighted_consensus(
    item_index: np.ndarray, preference: np.ndarray, rater: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item, the most probable direction under Dawid-Skene, its strength as in ``majority_consensus`` (so a reward
    margin means the same under every policy) and its posterior probability (NaN for an item with no judgment)."""
    posterior = dawid_skene({"item": item_index, "rater": rater, "preference": preference}).posterior
    items, probabilities = posterior.index.to_numpy(dtype=np.int64), posterior.to_numpy()
    direction = np.zeros(n_items, np.int64)
    direction[items] = _decided(probabilities)
    confidence = np.full(n_items, np.nan)
    confidence[items] = probabilities[np.arange(len(items)), direction[items] + 1]
    return direction, _strength(item_index, preference, direction, n_items), confidence


def array_consensus(
    policy: str, *, item_index: np.ndarray, preference: np.ndarray, rater: np.ndarray, n_items: int
) -> dict[str, np.ndarray]:
    """Per item under ``policy``: direction, strength, agreement (share of the judgments whose sign is the direction)
    and confidence (the posterior of the direction under ``weighted``, the agreement under the others); NaN for
    agreement and confidence where an item has no judgment."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
    confidence = None
    if policy == "weighted":
        direction, strength, confidence = weighted_consensus(item_index, preference, rater, n_items)
    else:
        consensus = majority_consensus if policy == "majority" else mean_consensus
        direction, strength = consensus(item_index, preference, n_items)
    n_judgments = np.bincount(item_index, minlength=n_items)
    agrees = np.bincount(item_index, weights=np.sign(preference) == direction[item_index], minlength=n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = agrees / n_judgments  # 0/0: NaN, no figure for an item nobody judged
    confidence = agreement if confidence is None else confidence
    return {"direction": direction, "strength": strength, "agreement": agreement, "confidence": confidence}


def item_consensus(data: pd.DataFrame | Mapping[str, Any]) -> pd.DataFrame:
    """One row per item (index ``item``); directions are -1 A better, 0 tie, +1 B better, <NA> when undecided.

    Columns: ``n_raters``; ``majority`` (the A/tie/B label most raters gave, <NA> on a tie between labels);
    ``mean_preference`` (mean of the -2..2 preferences); ``p_a``, ``p_tie``, ``p_b`` (Dawid-Skene posterior);
    ``weighted`` (the most probable class under that posterior, <NA> on an exact draw); ``agreement`` (share of the
    item's raters who gave its most common label, the filter for exports: 1.0 is unanimous).
    """
    frame = judgment_frame(data)
    counts = label_counts(frame)
    votes = counts.to_numpy()
    posterior = dawid_skene(frame).posterior
    table = pd.DataFrame(index=counts.index)
    table["n_raters"] = votes.sum(axis=1)
    table["majority"] = pd.array(majority(votes), dtype="Int64")
    table["mean_preference"] = first_judgments(frame).groupby("item")["preference"].mean()
    table[["p_a", "p_tie", "p_b"]] = posterior.to_numpy()
    table["weighted"] = pd.array(majority(posterior.to_numpy()), dtype="Int64")
    table["agreement"] = votes.max(axis=1, initial=0) / table["n_raters"]
    return table
