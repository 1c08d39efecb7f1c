"""Per-rater quality: calibration accuracy, agreement with peers, position bias, consistency, speed, reasoning.

``rater_table`` returns one row per rater (index ``rater``); ``storage.quality.flags`` turns it into flags.
Behaviour (ties, position, time, reasoning, calibration) counts every judgment, repeats included; agreement with
peers and competence use each rater's first judgment of an item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from storage.quality.competence import dawid_skene
from storage.quality.judgments import COLUMNS, SCALE, first_judgments, judgment_frame, label_counts, majority

CALIBRATION_COLUMNS = ("item", "accepted", "kind")


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


def _behaviour(frame: pd.DataFrame) -> pd.DataFrame:
    decided = frame["preference"] != 0
    # A negative preference picks A; A was on the left when left == "a".
    chose_left = decided & ((frame["preference"] < 0) == (frame["left"] == "a"))
    rater = frame.assign(tie=~decided, decided=decided, chose_left=chose_left).groupby("rater")
    table = rater.agg(
        n_judgments=("item", "size"),
        n_items=("item", "nunique"),
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
    return table.drop(columns="n_left")


def _peer_agreement(frame: pd.DataFrame) -> pd.DataFrame:
    """Agreement of each rater's A/tie/B label with the majority of the other raters of the same item."""
    first = first_judgments(frame)
    own = np.eye(3, dtype=int)[first["direction"].to_numpy() + 1]
    others = label_counts(frame).loc[first["item"]].to_numpy() - own
    peers = majority(others)
    agrees = np.where(np.isnan(peers), np.nan, first["direction"].to_numpy() == peers)
    rater = pd.Series(agrees, index=first["rater"]).groupby(level=0)
    return pd.DataFrame({"peer_agreement": rater.mean(), "n_peer_items": rater.count()})


def _consistency(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of the items a rater judged more than once on which every judgment has the same A/tie/B label."""
    pairs = frame.groupby(["rater", "item"])["direction"].agg(["size", "nunique"])
    repeated = pairs["size"] > 1
    consistent = (pairs["nunique"] == 1).astype(float).where(repeated)
    rater = pd.DataFrame({"consistency": consistent, "n_repeated": repeated}).groupby(level="rater")
    return rater.agg({"consistency": "mean", "n_repeated": "sum"})


def _speed(frame: pd.DataFrame) -> pd.DataFrame:
    median = frame["time_on_task_s"].median()
    per_rater = frame.groupby("rater")["time_on_task_s"].median()
    return pd.DataFrame({"median_time_s": per_rater, "time_ratio": per_rater / median if median > 0 else np.nan})


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
    frame = judgment_frame(data, columns=COLUMNS)
    gold = calibration_frame(calibration)
    regular = frame[~frame["item"].isin(gold.index)]
    parts = [
        _behaviour(frame),
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
