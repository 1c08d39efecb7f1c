"""Campaign-level agreement: Krippendorff's alpha, Fleiss' kappa, raw agreement, pairwise Cohen's kappa.

Every statistic is computed from the items x values count table of first judgments, so a bootstrap replicate is
just a resampled set of rows. Only items judged by at least two raters carry information about agreement; the
bootstrap resamples those.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats import inter_rater

from storage.quality.judgments import DIRECTIONS, SCALE, judgment_frame, label_counts, reliability_matrix


@dataclass(frozen=True)
class Estimate:
    """A statistic and its bootstrap percentile interval (NaN bounds when no bootstrap was run)."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class CampaignAgreement:
    """Agreement over a campaign's judgments."""

    alpha_ordinal: Estimate  # Krippendorff's alpha on the 5-point scale, ordinal distance
    alpha_nominal: Estimate  # Krippendorff's alpha on the A/tie/B collapse
    fleiss_kappa: Estimate  # A/tie/B, over the items judged by exactly `fleiss_raters` raters
    raw_agreement: Estimate  # A/tie/B: mean over items of the fraction of rater pairs that agree
    n_items: int  # items judged by at least two raters
    fleiss_raters: int  # the most common number of raters among those items (the larger one on a tie)
    fleiss_items: int  # items Fleiss' kappa was computed on
    # Raters x raters Cohen's kappa on A/tie/B; NaN on the diagonal, below `min_shared` shared items, and where kappa
    # is undefined (both raters gave one and the same label throughout).
    cohen: pd.DataFrame


def _collapse(counts: np.ndarray) -> np.ndarray:
    """Counts over SCALE -> counts over DIRECTIONS."""
    return np.column_stack([counts[:, :2].sum(axis=1), counts[:, 2], counts[:, 3:].sum(axis=1)])


def _alpha(counts: np.ndarray, values: tuple[int, ...], level: str) -> float:
    if not (counts.sum(axis=1) >= 2).any():
        return float("nan")
    # With a single value observed the expected disagreement is 0 and alpha is undefined: NaN, not a warning.
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(krippendorff.alpha(value_counts=counts, value_domain=values, level_of_measurement=level))


def _fleiss(counts: np.ndarray, n_raters: int) -> float:
    # statsmodels' formula needs every item judged by the same number of raters: keep the items with the modal count.
    table = counts[counts.sum(axis=1) == n_raters]
    if n_raters < 2 or not len(table):
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(inter_rater.fleiss_kappa(table, method="fleiss"))


def _raw(counts: np.ndarray) -> float:
    n = counts.sum(axis=1)
    if not len(n):
        return float("nan")
    return float(((counts * (counts - 1)).sum(axis=1) / (n * (n - 1))).mean())


def _modal_count(counts: np.ndarray) -> int:
    sizes, frequency = np.unique(counts.sum(axis=1), return_counts=True)
    return int(sizes[frequency == frequency.max()].max()) if len(sizes) else 0


def _statistics(counts: np.ndarray, n_raters: int) -> np.ndarray:
    """alpha ordinal, alpha nominal, Fleiss' kappa, raw agreement of an items x SCALE count table."""
    directions = _collapse(counts)
    return np.array(
        [
            _alpha(counts, SCALE, "ordinal"),
            _alpha(directions, DIRECTIONS, "nominal"),
            _fleiss(directions, n_raters),
            _raw(directions),
        ]
    )


def _bootstrap(counts: np.ndarray, n_raters: int, *, n_boot: int, seed: int, confidence: float) -> np.ndarray:
    """(statistic, [low, high]) percentile intervals from resampling items with replacement."""
    if n_boot == 0 or not len(counts):
        return np.full((4, 2), np.nan)
    rng = np.random.default_rng(seed)
    draws = np.array([_statistics(counts[rng.integers(0, len(counts), len(counts))], n_raters) for _ in range(n_boot)])
    tail = (1 - confidence) / 2 * 100
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a statistic undefined in every replicate stays NaN
        return np.nanpercentile(draws, [tail, 100 - tail], axis=0).T


def _cohen(frame: pd.DataFrame, min_shared: int) -> pd.DataFrame:
    matrix = reliability_matrix(frame, column="direction")
    values = matrix.to_numpy()
    seen = ~np.isnan(values)
    shared = seen.astype(int) @ seen.T.astype(int)
    kappa = np.full(shared.shape, np.nan)
    for a, b in zip(*np.nonzero(np.triu(shared >= min_shared, k=1)), strict=True):
        both = seen[a] & seen[b]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)  # both used one and the same label: NaN
            kappa[a, b] = kappa[b, a] = cohen_kappa_score(
                values[a, both].astype(int), values[b, both].astype(int), labels=list(DIRECTIONS)
            )
    return pd.DataFrame(kappa, index=matrix.index, columns=matrix.index)


def campaign_agreement(
    data: pd.DataFrame | Mapping[str, Any],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_shared: int = 10,
) -> CampaignAgreement:
    """Agreement statistics with bootstrap intervals over items (``n_boot=0`` skips the bootstrap)."""
    if n_boot < 0 or not 0 < confidence < 1 or min_shared < 1:
        raise ValueError(f"bad bootstrap settings: n_boot={n_boot}, confidence={confidence}, min_shared={min_shared}")
    frame = judgment_frame(data)
    counts = label_counts(frame, column="preference").to_numpy()
    counts = counts[counts.sum(axis=1) >= 2]
    n_raters = _modal_count(counts)
    values = _statistics(counts, n_raters)
    bounds = _bootstrap(counts, n_raters, n_boot=n_boot, seed=seed, confidence=confidence)
    estimates = [Estimate(float(v), float(low), float(high)) for v, (low, high) in zip(values, bounds, strict=True)]
    return CampaignAgreement(
        *estimates,
        n_items=len(counts),
        fleiss_raters=n_raters,
        fleiss_items=int((counts.sum(axis=1) == n_raters).sum()),
        cohen=_cohen(frame, min_shared),
    )
