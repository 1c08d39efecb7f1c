"""How well a scorer orders pairs: pairwise accuracy with its interval, and whether it only learned length.

Pure numpy over per-pair arrays (a reward model's scores of each pair's chosen and rejected response, and the
responses' lengths), so the evaluation of a run and the benchmarks read the same figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from statsmodels.stats.proportion import proportion_confint

LENGTH_BUCKETS = (0, 200, 500, 1000)
"""Lower edges, in characters, of the buckets of a pair's mean response length."""


def accuracy_interval(correct: np.ndarray) -> dict[str, Any]:
    """Share right with its 95% Wilson interval and the count it is over."""
    n, right = len(correct), int(np.sum(correct))
    if not n:
        return {"accuracy": None, "ci95": None, "pairs": 0}
    low, high = proportion_confint(right, n, alpha=0.05, method="wilson")
    return {"accuracy": round(right / n, 4), "ci95": [round(float(low), 4), round(float(high), 4)], "pairs": n}


def pairwise_figures(
    chosen: np.ndarray, rejected: np.ndarray, chosen_length: np.ndarray, rejected_length: np.ndarray
) -> dict[str, Any]:
    """Pairwise accuracy of scores ``chosen``/``rejected`` (a tie counts as wrong, never as right), its 95% interval,
    the mean margin, accuracy by the pair's mean response length, and the length figures a length-only scorer would
    give away: how often the longer response won by the labels and by the scores, and accuracy on the pairs where
    the chosen response is the shorter one (a length-only scorer gets those all wrong)."""
    chosen, rejected = np.asarray(chosen, float), np.asarray(rejected, float)
    chosen_length, rejected_length = np.asarray(chosen_length), np.asarray(rejected_length)
    correct = chosen > rejected
    mean_length = (chosen_length + rejected_length) / 2
    edges = [*LENGTH_BUCKETS, np.inf]
    buckets = {
        (f"{low}-{high - 1} chars" if np.isfinite(high) else f"{low}+ chars"): accuracy_interval(
            correct[(mean_length >= low) & (mean_length < high)]
        )
        for low, high in zip(edges[:-1], edges[1:], strict=True)
    }
    differ = chosen_length != rejected_length
    longer_chosen = chosen_length > rejected_length
    return {
        **accuracy_interval(correct),
        "ties": int(np.sum(chosen == rejected)),
        "mean_margin": round(float(np.mean(chosen - rejected)), 4) if len(chosen) else None,
        "by_mean_response_length": buckets,
        "longer_response_chosen_by_labels": _share(longer_chosen[differ]),
        "longer_response_scored_higher": _share(
            longer_scored_higher(chosen, rejected, chosen_length, rejected_length)
        ),
        "accuracy_when_chosen_is_longer": accuracy_interval(correct[differ & longer_chosen]),
        "accuracy_when_chosen_is_shorter": accuracy_interval(correct[differ & ~longer_chosen]),
    }


def longer_scored_higher(
    chosen: np.ndarray, rejected: np.ndarray, chosen_length: np.ndarray, rejected_length: np.ndarray
) -> np.ndarray:
    """For each pair whose responses differ in length, whether the longer one scored higher (a tie: no)."""
    chosen, rejected = np.asarray(chosen, float), np.asarray(rejected, float)
    chosen_length, rejected_length = np.asarray(chosen_length), np.asarray(rejected_length)
    longer_chosen = chosen_length > rejected_length
    return np.where(longer_chosen, chosen > rejected, rejected > chosen)[chosen_length != rejected_length]


def _share(mask: np.ndarray) -> float | None:
    return round(float(np.mean(mask)), 4) if len(mask) else None
