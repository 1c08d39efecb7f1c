"""Consensus per item: majority vote, mean strength, the competence-weighted (Dawid-Skene) label, and agreement."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from storage.quality.competence import dawid_skene
from storage.quality.judgments import DIRECTIONS, first_judgments, judgment_frame, label_counts, majority


def item_consensus(data: pd.DataFrame | Mapping[str, Any]) -> pd.DataFrame:
    """One row per item (index ``item``); directions are -1 A better, 0 tie, +1 B better, <NA> when undecided.

    Columns: ``n_raters``; ``majority`` (the A/tie/B label most raters gave, <NA> on a tie between labels);
    ``mean_preference`` (mean of the -2..2 preferences); ``p_a``, ``p_tie``, ``p_b`` (Dawid-Skene posterior);
    ``weighted`` (the most probable class under that posterior); ``agreement`` (share of the item's raters who gave
    its most common label, the filter for exports: 1.0 is unanimous).
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
    table["weighted"] = np.asarray(DIRECTIONS)[posterior.to_numpy().argmax(axis=1)]
    table["agreement"] = votes.max(axis=1, initial=0) / table["n_raters"]
    return table
