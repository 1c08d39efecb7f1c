"""Rater flags: which raters a lead should look at, and why, from the per-rater table of ``storage.quality.raters``.

A rater is flagged for a reason only when three things hold: they have the minimum evidence for it (judgments or
calibration answers), they are past the line that matters (say, more than 30% ties), and a test shows it, after
correcting for testing every rater of the campaign (Holm by default, one family per reason). Where a line exists the
test is against the line itself (one-sided binomial: calibration, position, length, ties), so a rater just past it
is not flagged for noise; speed and agreement, which have no fixed line, are tested against the other raters.
A rater past a line without that evidence yet, or with too few judgments for any test, is ``not enough evidence
yet``: a distinct status, never a flag, so a small team is told to wait rather than shown noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from scipy.stats import binom, binomtest, fisher_exact
from statsmodels.stats.multitest import multipletests

from storage.quality.raters import rater_table

REASONS = ("low_calibration", "position_bias", "length_bias", "many_ties", "too_fast", "low_competence")
STATUSES = ("flagged", "not enough evidence yet", "ok")
CORRECTIONS = ("holm", "bonferroni", "fdr_bh", "none")


@dataclass
class FlagArguments:
    """Thresholds for flagging raters: the evidence each test needs, the effect that matters, and the test level."""

    alpha: float = field(
        default=0.05,
        metadata={"help": "Flag only when a test's p-value, corrected across the raters tested, is below this."},
    )
    correction: str = field(
        default="holm",
        metadata={"help": "Correction across raters (statsmodels multipletests): holm, bonferroni, fdr_bh or none. "
                  "Testing 40 raters at 0.05 each flags about two careful ones for noise."},
    )  # fmt: skip
    min_calibration_accuracy: float = field(
        default=0.7, metadata={"help": "Flag when recent calibration accuracy is significantly below this."}
    )
    min_calibration_items: int = field(
        default=5, metadata={"help": "Recent calibration answers a rater needs before their accuracy is tested."}
    )
    left_rate_low: float = field(default=0.4, metadata={"help": "Lower end of the accepted left-choice rate."})
    left_rate_high: float = field(default=0.6, metadata={"help": "Upper end of the accepted left-choice rate."})
    max_length_gap: float = field(
        default=0.2,
        metadata={"help": "Flag when the share of decided judgments picking the longer response differs from the "
                  "other raters' share by more than this."},
    )  # fmt: skip
    max_tie_rate: float = field(
        default=0.3, metadata={"help": "Flag raters calling more than this share ties, and more than the others."}
    )
    too_fast_fraction: float = field(
        default=0.25, metadata={"help": "Flag raters whose median time is below this fraction of the campaign median."}
    )
    max_agreement_gap: float = field(
        default=0.15,
        metadata={"help": "Flag when agreement with the other raters' majority is this far below the others' own."},
    )
    min_judgments: int = field(
        default=20,
        metadata={"help": "Judgments a rater needs before ties, position, length, speed or agreement count."},
    )

    def __post_init__(self):
        unit = ("alpha", "min_calibration_accuracy", "max_length_gap", "max_tie_rate", "too_fast_fraction")
        for name in (*unit, "max_agreement_gap"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.left_rate_low <= self.left_rate_high <= 1:
            raise ValueError(
                f"need 0 <= left_rate_low <= left_rate_high <= 1, got {self.left_rate_low}..{self.left_rate_high}"
            )
        if self.min_calibration_items < 1 or self.min_judgments < 1:
            raise ValueError("min_calibration_items and min_judgments must be at least 1")
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {self.correction!r}")


def calibration_p(table: pd.DataFrame, threshold: float) -> pd.Series:
    """P(this many or fewer right | true accuracy = threshold) over each rater's recent calibration answers."""
    answered = table["calibration_recent_n"].fillna(0)
    correct = (table["calibration_recent_accuracy"].fillna(0) * answered).round()
    return pd.Series(binom.cdf(correct, answered, threshold), index=table.index).where(answered > 0)


def _past(hits: pd.Series, trials: pd.Series, *, low: Any = None, high: Any = None) -> pd.Series:
    """One-sided binomial p-value that a rate lies below ``low`` (or above ``high``); with both, the smaller one
    doubled. The null is the threshold itself, not "like everyone": a rater is flagged only when shown past it."""
    sides = {"less": low, "greater": high}
    bounds = {
        side: pd.Series(bound, index=hits.index, dtype=float) for side, bound in sides.items() if bound is not None
    }
    p = pd.Series(float("nan"), index=hits.index)
    for rater, k, n in zip(hits.index, hits.fillna(0).astype(int), trials.fillna(0).astype(int), strict=True):
        if n:  # a bound outside (0, 1) cannot be crossed: binomtest would say p = 1 there anyway
            tails = [binomtest(k, n, b[rater], alternative=side).pvalue if 0 < b[rater] < 1 else 1.0
                     for side, b in bounds.items()]  # fmt: skip
            p[rater] = min(1.0, len(tails) * min(tails))
    return p


def _below_others(hits: pd.Series, trials: pd.Series) -> pd.Series:
    """Fisher's exact p-value that a rater's rate is below the pooled rate of all the other raters."""
    hits, trials = hits.fillna(0).astype(int), trials.fillna(0).astype(int)
    other_hits, other_trials = hits.sum() - hits, trials.sum() - trials
    p = [
        fisher_exact([[k, n - k], [ok, on - ok]], alternative="less").pvalue if n and on else float("nan")
        for k, n, ok, on in zip(hits, trials, other_hits, other_trials, strict=True)
    ]
    return pd.Series(p, index=hits.index, dtype=float)


def _signals(table: pd.DataFrame, args: FlagArguments) -> dict[str, tuple[pd.Series, pd.Series, pd.Series]]:
    """Per reason: (has the minimum evidence, effect past the threshold, p-value of being past it)."""
    enough = table["n_judgments"] >= args.min_judgments
    nan = pd.Series(float("nan"), index=table.index)
    column = table.get  # the length columns are absent when the judgments carry no response lengths
    longer, others = column("longer_rate", nan), column("longer_rate_others", nan)
    low, high = others - args.max_length_gap, others + args.max_length_gap
    ties = table["tie_rate_others"].clip(lower=args.max_tie_rate).fillna(args.max_tie_rate)
    agreement = table["peer_agreement_others"] - args.max_agreement_gap
    return {
        "low_calibration": (
            table["calibration_recent_n"].fillna(0) >= args.min_calibration_items,
            table["calibration_recent_accuracy"] < args.min_calibration_accuracy,
            calibration_p(table, args.min_calibration_accuracy),
        ),
        "position_bias": (
            enough & (table["n_decided"] >= args.min_judgments),
            ~table["left_rate"].between(args.left_rate_low, args.left_rate_high) & table["left_rate"].notna(),
            _past(table["n_left"], table["n_decided"], low=args.left_rate_low, high=args.left_rate_high),
        ),
        "length_bias": (
            enough & (column("n_length", nan) >= args.min_judgments),
            (longer < low) | (longer > high),
            _past(column("n_longer", nan), column("n_length", nan), low=low, high=high),
        ),
        "many_ties": (
            enough,
            table["tie_rate"] > ties,
            _past(table["n_ties"], table["n_judgments"], high=ties),
        ),
        "too_fast": (enough, table["time_ratio"] < args.too_fast_fraction, table["speed_p"]),
        "low_competence": (
            enough & (table["n_peer_items"] >= args.min_judgments),
            table["peer_agreement"] < agreement,
            # Against the others, not the line: no fixed agreement is right, and the others' rate is noisy too.
            _below_others(table["n_peer_agreed"], table["n_peer_items"]),
        ),
    }


def _corrected(p: pd.Series, tested: pd.Series, correction: str) -> pd.Series:
    """p-values corrected across the raters tested; NaN for the others."""
    tested = tested & p.notna()
    out = pd.Series(float("nan"), index=p.index)
    if tested.any():
        out[tested] = p[tested] if correction == "none" else multipletests(p[tested], method=correction)[1]
    return out


def flag_raters(table: pd.DataFrame, args: FlagArguments | None = None) -> pd.DataFrame:
    """Per reason in ``REASONS``: a boolean flag, ``<reason>_p_corrected`` and ``<reason>_pending`` (the effect is
    there but not yet its evidence); ``flagged`` when any flag holds and ``status``, one of ``STATUSES``."""
    args = args or FlagArguments()
    columns = {}
    for reason, (tested, effect, p) in _signals(table, args).items():
        corrected = _corrected(p, tested.fillna(False).astype(bool), args.correction)
        effect = effect.fillna(False).astype(bool)
        columns[reason] = effect & (corrected < args.alpha)
        columns[f"{reason}_p_corrected"] = corrected
        columns[f"{reason}_pending"] = effect & ~columns[reason]
    flags = pd.DataFrame(columns, index=table.index)
    flags["flagged"] = flags[list(REASONS)].any(axis=1)
    pending = flags[[f"{reason}_pending" for reason in REASONS]].any(axis=1)
    waiting = pending | (table["n_judgments"] < args.min_judgments)
    flags["status"] = [
        STATUSES[0] if flagged else STATUSES[1] if wait else STATUSES[2]
        for flagged, wait in zip(flags["flagged"], waiting, strict=True)
    ]
    return flags


def campaign_flags(
    judgments: pd.DataFrame | Mapping[str, Any],
    calibration: pd.DataFrame | Mapping[str, Any] | None,
    *,
    min_calibration_accuracy: float,
    calibration_window: int,
) -> pd.DataFrame:
    """A campaign's rater table joined with its flags, under the campaign's own calibration settings.

    ``judgments`` and ``calibration`` are ``storage.frames.judgment_frame_for`` and ``calibration_frame_for``;
    ``min_calibration_accuracy`` and ``calibration_window`` are the campaign's ``calibration_threshold`` and
    ``calibration_window`` (every other threshold is ``FlagArguments``' default). One row per rater; ``flagged``
    marks the flagged set, the ``REASONS`` columns say why and ``status`` which raters lack the evidence yet.
    """
    table = rater_table(judgments, calibration=calibration, calibration_window=calibration_window)
    return table.join(flag_raters(table, FlagArguments(min_calibration_accuracy=min_calibration_accuracy)))
