"""Rater flags: which raters a lead should look at, and why, from the per-rater table of ``storage.quality.raters``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from scipy.stats import binom

from storage.quality.raters import rater_table

REASONS = ("low_calibration", "position_bias", "many_ties", "too_fast", "low_competence")


@dataclass
class FlagArguments:
    """Thresholds for flagging raters."""

    min_calibration_accuracy: float = field(
        default=0.7, metadata={"help": "Flag when recent calibration accuracy is significantly below this."}
    )
    calibration_p: float = field(
        default=0.05,
        metadata={"help": "One-sided binomial p-value below which recent calibration accuracy is taken to be under "
                  "min_calibration_accuracy (a raw cut-off flags careful raters for sampling noise)."},
    )  # fmt: skip
    min_calibration_items: int = field(
        default=5, metadata={"help": "Calibration answers a rater needs before their accuracy can flag them."}
    )
    position_p: float = field(
        default=0.01, metadata={"help": "Binomial-test p-value below which a left/right preference is not chance."}
    )
    left_rate_low: float = field(default=0.35, metadata={"help": "Lower end of the accepted left-choice rate."})
    left_rate_high: float = field(default=0.65, metadata={"help": "Upper end of the accepted left-choice rate."})
    max_tie_rate: float = field(default=0.5, metadata={"help": "Flag raters who call more than this share ties."})
    too_fast_fraction: float = field(
        default=0.25, metadata={"help": "Flag raters whose median time is below this fraction of the campaign median."}
    )
    min_reliability: float = field(
        default=0.55, metadata={"help": "Flag raters whose Dawid-Skene reliability is below this (0.5 is chance)."}
    )
    min_judgments: int = field(
        default=20, metadata={"help": "Judgments a rater needs before tie rate, speed or competence can flag them."}
    )

    def __post_init__(self):
        unit = ("min_calibration_accuracy", "calibration_p", "position_p", "max_tie_rate", "too_fast_fraction")
        for name in (*unit, "min_reliability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.left_rate_low <= self.left_rate_high <= 1:
            raise ValueError(
                f"need 0 <= left_rate_low <= left_rate_high <= 1, got {self.left_rate_low}..{self.left_rate_high}"
            )
        if self.min_calibration_items < 1 or self.min_judgments < 1:
            raise ValueError("min_calibration_items and min_judgments must be at least 1")


def _calibration_p(table: pd.DataFrame, threshold: float) -> pd.Series:
    """P(this many or fewer right | true accuracy = threshold) over each rater's recent calibration answers."""
    answered = table["calibration_recent_n"].fillna(0)
    correct = (table["calibration_recent_accuracy"].fillna(0) * answered).round()
    return pd.Series(binom.cdf(correct, answered, threshold), index=table.index).where(answered > 0, 1.0)


def flag_raters(table: pd.DataFrame, args: FlagArguments | None = None) -> pd.DataFrame:
    """One boolean column per reason in ``REASONS``, and ``flagged`` when any holds; rows follow ``table``."""
    args = args or FlagArguments()
    enough = table["n_judgments"] >= args.min_judgments
    flags = pd.DataFrame(
        {
            "low_calibration": (table["calibration_n"] >= args.min_calibration_items)
            & (_calibration_p(table, args.min_calibration_accuracy) < args.calibration_p),
            "position_bias": (table["position_p"] < args.position_p)
            & ~table["left_rate"].between(args.left_rate_low, args.left_rate_high),
            "many_ties": enough & (table["tie_rate"] > args.max_tie_rate),
            "too_fast": enough & (table["time_ratio"] < args.too_fast_fraction),
            "low_competence": enough & (table["reliability"] < args.min_reliability),
        },
        index=table.index,
    )
    flags["flagged"] = flags.any(axis=1)
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
    marks the flagged set and the ``REASONS`` columns say why.
    """
    table = rater_table(judgments, calibration=calibration, calibration_window=calibration_window)
    return table.join(flag_raters(table, FlagArguments(min_calibration_accuracy=min_calibration_accuracy)))
