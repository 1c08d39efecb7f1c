"""Judgment tables in long format: validation, the A/tie/B collapse, counts per item, the reliability matrix.

A judgment table has one row per judgment with columns ``item`` (pair id), ``rater``, ``preference`` (-2 A much
better .. 0 tie .. +2 B much better), ``both_bad``, ``left`` ("a" or "b": the response shown on the left),
``time_on_task_s`` and ``reasoning``, and may have ``length_a`` and ``length_b`` (characters in each response).
Rows are in the order they were made. A rater who judged an item more than once (a repeat) counts once for
agreement, competence and consensus: their first judgment of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

SCALE = (-2, -1, 0, 1, 2)
DIRECTIONS = (-1, 0, 1)
"""The A/tie/B collapse of the scale: -1 A better, 0 tie, +1 B better."""
KEYS = ("item", "rater", "preference")
COLUMNS = (*KEYS, "both_bad", "left", "time_on_task_s", "reasoning")
LENGTHS = ("length_a", "length_b")


def _finite_non_negative(values: pd.Series) -> pd.Series:
    number = pd.to_numeric(values, errors="coerce")
    return pd.Series(np.isfinite(number) & (number >= 0), index=values.index)


_CHECKS = {
    "item": (lambda v: v.notna(), "a pair id"),
    "rater": (lambda v: v.notna(), "a rater id"),
    "preference": (lambda v: v.isin(SCALE), "an integer from -2 to 2"),
    "both_bad": (lambda v: v.isin([True, False]), "true or false"),
    "left": (lambda v: v.isin(["a", "b"]), "'a' or 'b'"),
    "time_on_task_s": (_finite_non_negative, "a number of seconds >= 0"),
    "reasoning": (lambda v: v.map(lambda text: isinstance(text, str)).astype(bool), "a string"),
    "length_a": (_finite_non_negative, "a number of characters >= 0"),
    "length_b": (_finite_non_negative, "a number of characters >= 0"),
}


def judgment_frame(data: pd.DataFrame | Mapping[str, Any], *, columns: tuple[str, ...] = KEYS) -> pd.DataFrame:
    """Validate a judgment table (a DataFrame or a mapping of arrays) and add ``direction`` (-1, 0, +1)."""
    frame = pd.DataFrame(data).reset_index(drop=True)
    if missing := [name for name in columns if name not in frame.columns]:
        raise ValueError(f"judgments: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}")
    if "reasoning" in columns:
        frame["reasoning"] = frame["reasoning"].fillna("")
    for name in columns:
        check, expected = _CHECKS[name]
        if bad := np.flatnonzero(~check(frame[name]).to_numpy()).tolist():
            more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
            got = frame[name].tolist()[bad[0]]
            raise ValueError(f"judgments row {bad[0]}: field {name!r} must be {expected}, got {got!r}{more}")
    frame["preference"] = frame["preference"].astype(int)
    frame["direction"] = np.sign(frame["preference"])
    if "both_bad" in columns:
        frame["both_bad"] = frame["both_bad"].astype(bool)
    if "time_on_task_s" in columns:
        frame["time_on_task_s"] = pd.to_numeric(frame["time_on_task_s"]).astype(float)
    if "reasoning" in columns:
        frame["reasoning"] = frame["reasoning"].astype(str)
    return frame


def first_judgments(frame: pd.DataFrame) -> pd.DataFrame:
    """Each rater's first judgment of each item: later ones are repeats, scored only for consistency."""
    return frame.drop_duplicates(["rater", "item"], keep="first")


def label_counts(frame: pd.DataFrame, *, column: str = "direction") -> pd.DataFrame:
    """Items x values of a validated frame: how many raters gave each value to each item."""
    values = DIRECTIONS if column == "direction" else SCALE
    first = first_judgments(frame)
    # factorize + bincount: pd.crosstab takes seconds on a million judgments.
    codes, items = pd.factorize(first["item"], sort=True)
    value_codes = first[column].to_numpy().astype(np.int64) - values[0]
    counts = np.bincount(codes * len(values) + value_codes, minlength=len(items) * len(values))
    index = pd.Index(items, name="item")
    return pd.DataFrame(counts.reshape(len(items), len(values)), index=index, columns=pd.Index(values, name=column))


def majority(counts: np.ndarray) -> np.ndarray:
    """Direction holding the most votes in each row of an items x DIRECTIONS count array; NaN on a tie or no votes."""
    top = counts.max(axis=1, initial=0)
    unique = (counts == top[:, None]).sum(axis=1) == 1
    return np.where(unique & (top > 0), np.asarray(DIRECTIONS, dtype=float)[counts.argmax(axis=1)], np.nan)


def reliability_matrix(data: pd.DataFrame | Mapping[str, Any], *, column: str = "preference") -> pd.DataFrame:
    """Raters x items matrix of each rater's first ``column`` value per item, NaN where the rater did not judge it."""
    first = first_judgments(judgment_frame(data))
    return first.pivot(index="rater", columns="item", values=column).astype(float)
