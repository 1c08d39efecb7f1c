"""Per-rater quality: calibration accuracy, agreement with peers, position and length bias, consistency, speed.

``rater_table`` returns one row per rater (index ``rater``) with each measure and the counts behind it;
``storage.quality.flags`` tests them against its thresholds and turns them into flags. Behaviour (ties, position,
length, time, reasoning, calibration) counts every judgment, repeats included; agreement with peers and competence
use each rater's first judgment of an item. Where no fixed rate is right (ties, the longer response, agreement), the
``*_others`` columns hold the pooled rate of all the other raters of the campaign, the baseline a rater is held to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest, mannwhitneyu

from storage.quality.competence import dawid_skene
from storage.quality.judgments import (
    COLUMNS,
    LENGTHS,
    SCALE,
    first_judgments,
    judgment_frame,
    label_counts,
    majority,
)

CALIBRATION_COLUMNS = ("item", "accepted", "kind")
SPEED_SAMPLE = 10_000


def calibration_frame(data: pd.DataFrame | Mapping[str, Any] | None) -> pd.DataFrame:
    """Validate calibration items (``item``, ``accepted``: list of correct preferences, ``kind``), indexed by item."""
    frame = pd.DataFrame(data if data is not None else {name: [] for name in CALIBRATION_COLUMNS})
    if missing := [name for name in CALIBRATION_COLUMNS if name not in frame.columns]:
        raise ValueError(f"calibration: missing column(s) {', '.join(missing)}; expected item, accepted, kind")
    for row, (item, accepted, kind) in enumerate(frame[list(CALIBRATION_COLUMNS)].itertuples(index=False)):
        if not isinstance(accepted, list | tuple | set | np.ndarray) or not len(accepted):
            raise ValueError(f"calibration row {row} (item {item!r}): field 'accepted' must be a non-empty list")
        if any(value not in SCALE for value in accepted):
            raise ValueError(
                f"calibration row {row} (item {item!r}): 'accepted' must hold -2..2 only, got {accepted!r}"
            )
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"calibration row {row} (item {item!r}): field 'kind' must be a non-empty string")
    if repeated := frame["item"][frame["item"].duplicated()].tolist():
        raise ValueError(f"calibration: item {repeated[0]!r} is listed twice")
    return frame.set_index("item")


def _others(hits: pd.Series, trials: pd.Series) -> pd.Series:
    """Per rater, the pooled rate of every other rater: the baseline where no fixed rate is right."""
    other_trials = trials.sum() - trials
    return (hits.sum() - hits) / other_trials.where(other_trials > 0)


def _behaviour(frame: pd.DataFrame) -> pd.DataFrame:
    decided = frame["preference"] != 0
    # A negative preference picks A; A was on the left when left == "a".
    chose_left = decided & ((frame["preference"] < 0) == (frame["left"] == "a"))
    rater = frame.assign(tie=~decided, decided=decided, chose_left=chose_left).groupby("rater")
    table = rater.agg(
        n_judgments=("item", "size"),
        n_items=("item", "nunique"),
        n_ties=("tie", "sum"),
        tie_rate=("tie", "mean"),
        both_bad_rate=("both_bad", "mean"),
        n_decided=("decided", "sum"),
        n_left=("chose_left", "sum"),
    )
    table["left_rate"] = table["n_left"] / table["n_decided"].where(table["n_decided"] > 0)
    table["position_p"] = [
        binomtest(left, decided).pvalue if decided else np.nan
        for left, decided in zip(table["n_left"], table["n_decided"], strict=True)
    ]
    table["tie_rate_others"] = _others(table["n_ties"], table["n_judgments"])
    return table


def _length(frame: pd.DataFrame) -> pd.DataFrame:
    """How often a rater's decided judgments of responses of unequal length pick the longer one, and the others'."""
    if not set(LENGTHS) <= set(frame.columns):
        return pd.DataFrame(index=pd.Index(frame["rater"].unique(), name="rater"))
    longer = np.sign(frame["length_b"] - frame["length_a"])  # +1: B is longer, like a positive preference
    counted = (frame["direction"] != 0) & (longer != 0)
    picked = frame.assign(longer=(frame["direction"] == longer) & counted, counted=counted).groupby("rater")
    table = picked.agg(n_length=("counted", "sum"), n_longer=("longer", "sum"))
    table["longer_rate"] = table["n_longer"] / table["n_length"].where(table["n_length"] > 0)
    table["longer_rate_others"] = _others(table["n_longer"], table["n_length"])
    return table


def _peer_agreement(frame: pd.DataFrame) -> pd.DataFrame:
    """Agreement of each rater's A/tie/B label with the majority of the other raters of the same item."""
    first = first_judgments(frame)
    own = np.eye(3, dtype=int)[first["direction"].to_numpy() + 1]
    others = label_counts(frame).loc[first["item"]].to_numpy() - own
    peers = majority(others)
    agrees = np.where(np.isnan(peers), np.nan, first["direction"].to_numpy() == peers)
    rater = pd.Series(agrees, index=first["rater"]).groupby(level=0)
    table = pd.DataFrame({"peer_agreement": rater.mean(), "n_peer_items": rater.count(), "n_peer_agreed": rater.sum()})
    table["peer_agreement_others"] = _others(table["n_peer_agreed"], table["n_peer_items"])
    return table


def _consistency(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of the items a rater judged more than once on which every judgment has the same A/tie/B label."""
    pairs = frame.groupby(["rater", "item"])["direction"].agg(["size", "nunique"])
    repeated = pairs["size"] > 1
    consistent = (pairs["nunique"] == 1).astype(float).where(repeated)
    rater = pd.DataFrame({"consistency": consistent, "n_repeated": repeated}).groupby(level="rater")
    return rater.agg({"consistency": "mean", "n_repeated": "sum"})


def _speed(frame: pd.DataFrame) -> pd.DataFrame:
    """Median time, its ratio to the campaign median, and a one-sided Mann-Whitney test against the others' times."""
    median = frame["time_on_task_s"].median()
    times = frame.groupby("rater")["time_on_task_s"]
    speed_p = {}
    for rater, own in times:
        others = frame.loc[frame["rater"] != rater, "time_on_task_s"].to_numpy()
        # Every k-th of the others' times, at most SPEED_SAMPLE: on a million judgments the full test takes half a
        # second per rater, and fewer comparison times only make the test more conservative.
        others = others[:: -(-len(others) // SPEED_SAMPLE) or 1]
        speed_p[rater] = mannwhitneyu(own, others, alternative="less").pvalue if len(others) else np.nan
    per_rater = times.median()
    ratio = per_rater / median if median > 0 else np.nan
    return pd.DataFrame({"median_time_s": per_rater, "time_ratio": ratio, "speed_p": pd.Series(speed_p, dtype=float)})


def _reasoning(frame: pd.DataFrame) -> pd.DataFrame:
    """Median reasoning length, and the share of written reasonings that appear verbatim in another judgment."""
    text = frame["reasoning"].str.strip()
    written = text != ""
    duplicate = (text.duplicated(keep=False) & written).astype(float).where(written)
    rater = frame.assign(chars=text.str.len(), duplicate=duplicate).groupby("rater")
    return rater.agg(median_reasoning_chars=("chars", "median"), duplicate_reasoning_rate=("duplicate", "mean"))


def _calibration(frame: pd.DataFrame, calibration: pd.DataFrame, window: int) -> pd.DataFrame:
    answers = frame[frame["item"].isin(calibration.index)]
    accepted = answers["item"].map(calibration["accepted"])
    correct = [preference in set(ok) for preference, ok in zip(answers["preference"], accepted, strict=True)]
    answers = answers.assign(correct=np.asarray(correct, dtype=float), kind=answers["item"].map(calibration["kind"]))
    rater = answers.groupby("rater")["correct"]
    recent = answers.groupby("rater").tail(window)
    table = pd.DataFrame(
        {
            "calibration_n": rater.size(),
            "calibration_accuracy": rater.mean(),
            "calibration_recent_accuracy": recent.groupby("rater")["correct"].mean(),
            "calibration_recent_n": recent.groupby("rater").size(),
        }
    )
    by_kind = answers.pivot_table(index="rater", columns="kind", values="correct", aggfunc="mean")
    return table.join(by_kind.add_prefix("calibration_"))


def rater_table(
    data: pd.DataFrame | Mapping[str, Any],
    *,
    calibration: pd.DataFrame | Mapping[str, Any] | None = None,
    calibration_window: int = 20,
) -> pd.DataFrame:
    """One row per rater; ``calibration_recent_accuracy`` covers their last ``calibration_window`` calibrations."""
    if calibration_window < 1:
        raise ValueError(f"calibration_window must be at least 1, got {calibration_window}")
    frame = pd.DataFrame(data)
    frame = judgment_frame(frame, columns=COLUMNS + LENGTHS if set(LENGTHS) <= set(frame.columns) else COLUMNS)
    gold = calibration_frame(calibration)
    regular = frame[~frame["item"].isin(gold.index)]
    parts = [
        _behaviour(frame),
        _length(frame),
        _peer_agreement(frame),
        _consistency(frame),
        _speed(frame),
        _reasoning(frame),
        _calibration(frame, gold, calibration_window),
        # Regular items only: on gold items every rater answers, so raters sharing one shortcut (say, the longer
        # response) vouch for each other there; gold answers are scored against the truth above instead.
        dawid_skene(regular if len(regular) else frame).reliability,
    ]
    table = pd.concat(parts, axis=1)
    table["calibration_n"] = table["calibration_n"].fillna(0).astype(int)
    table.index.name = "rater"
    return table
